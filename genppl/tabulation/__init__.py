"""The model as the algorithms see it: its factors tabulated from the declaration
(``from_model``), its compiled program's enumerable and continuous sites (``prepared``), its
linear-Gaussian chains (``gaussian_chains``) and its finite latents summed out of a Pyro
program (``summed_out``)."""
