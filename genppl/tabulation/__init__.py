"""The model as the algorithms see it: its factors tabulated from the declaration
(``tabulation``: the reference ``model_factors`` and the recording ``Tabulation``; the work
itself in ``tabulator``, ``replay``, ``networks``, ``factories``, ``evidence``, ``placement``,
``uses``, ``library_internals``), its compiled program's enumerable and continuous sites
(``prepared``), its linear-Gaussian chains (``gaussian_chains``) and its finite latents
summed out of a Pyro program (``summed_out``)."""
