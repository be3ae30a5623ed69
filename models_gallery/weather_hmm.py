"""Seattle's weather, 2012-2015, as a hidden Markov model fitted by Baum-Welch.

Every day of four years (1,461 days, ``vega_datasets``' ``seattle_weather``, shipped with the
package) is labelled sun, fog, drizzle, rain or snow. A day's label depends on more than
yesterday's: wet and dry spells last for weeks and seasons. A 3-state HMM (Baum 1970;
Rabiner 1989) explains the labels by a hidden regime that persists; Baum-Welch (``engine="em"``,
exact E-steps) fits the start, transition and emission tables, the exact engine gives the
log-likelihood and the Viterbi path, and the share of each regime by calendar month and by
year shows what the regimes are. A memoryless model (one categorical distribution for every
day) is the baseline the HMM must beat; the likelihood ratio is reported per day.

What it finds is partly meteorology (a sunny regime that fills the summers) and partly the
data's history: the labels changed convention after 2012 -- 191 "rain" and 5 "fog" days in
2012, 5 "rain" and 173 "fog" days in 2015 -- and a long-lived rainy regime covers 2012
almost alone. An HMM is a fair detector of such a change point.
"""

from __future__ import annotations

from typing import Any

import torch

import genppl
from genppl.gallery import GalleryEntry, Report
from genppl.hmm import HMM, categorical_hmm

SYMBOLS = ("sun", "fog", "drizzle", "rain", "snow")
STATES = 3
#: EM iterations by default (it converges in about 100 at tol 1e-9).
STEPS = 300
TOL = 1e-9
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def build(seed: int = 0) -> genppl.Model:
    """A 3-state categorical HMM over the five labels, tables drawn from ``seed``."""
    return categorical_hmm(STATES, len(SYMBOLS), name="weather_hmm", seed=seed)


def load() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(labels, months, years)``: label codes (index into ``SYMBOLS``), calendar months
    1..12 and years, one per day in date order (the data ship with ``vega_datasets``; no
    network)."""
    from vega_datasets import data as vega

    frame = vega.seattle_weather().sort_values("date")
    codes = [SYMBOLS.index(label) for label in frame["weather"]]
    dates = frame["date"].dt
    return (torch.tensor(codes), torch.tensor(dates.month.to_numpy()),
            torch.tensor(dates.year.to_numpy()))


def data() -> dict[str, Any]:
    """The four years as one sequence: data shape ``(T, 1)`` and its step mask."""
    labels = load()[0]
    return {"x": labels.reshape(-1, 1), "valid": torch.ones(len(labels), 1, dtype=torch.bool)}


def experiment(report: Report) -> None:
    config = report.config
    labels, months, years = load()
    x = labels.reshape(-1, 1)
    hmm = HMM(report.build(config.seed), states=STATES, symbols=len(SYMBOLS))
    fitted = hmm.fit(x, steps=config.steps or STEPS, tol=TOL, progress=config.progress)
    order = _state_order(hmm.tables()["emit"])
    tables = {k: v.cpu() for k, v in hmm.tables().items()}
    trans = tables["trans"][order][:, order]
    emit = tables["emit"][order]
    names = [_state_name(row) for row in emit]
    path = hmm.viterbi(x).paths[:, 0].cpu()
    path = torch.argsort(torch.tensor(order))[path]  # relabel in the sorted order
    share = _share_by(path, months - 1, 12)
    first = int(years.min())
    by_year = _share_by(path, years - first, int(years.max()) - first + 1)
    log_lik = hmm.score(x)
    frequencies = torch.bincount(labels, minlength=len(SYMBOLS)).to(torch.float64)
    baseline = float((frequencies * (frequencies / len(labels)).log().nan_to_num(0.0)).sum())
    days = len(labels)

    report.line(f"{days} days, {STATES}-state HMM fitted by Baum-Welch (engine {report.engine}, "
                f"seed {config.seed}): {len(fitted.log_likelihood)} iterations"
                + (", converged" if fitted.converged else ", stopped at the step limit"))
    report.row("log p(labels)           HMM {log_likelihood:10.2f}   memoryless "
               "{memoryless_log_likelihood:10.2f}   "
               f"gain {(log_lik - baseline) / days:.3f} nats/day",
               log_likelihood=log_lik, memoryless_log_likelihood=baseline)
    report.line("emission P(label | state)   " + " ".join(f"{s:>8}" for s in SYMBOLS))
    for i in range(STATES):
        report.line(f"  {i} {names[i]:<24} " + " ".join(f"{p:8.3f}" for p in emit[i].tolist()))
    report.line("transition P(next | state)  " + " ".join(f"{i:>8}" for i in range(STATES))
                + "   mean stay (days)")
    for i in range(STATES):
        report.line(f"  {i} {names[i]:<24} " + " ".join(f"{p:8.3f}" for p in trans[i].tolist())
                    + f"   {1 / max(1 - float(trans[i, i]), 1e-12):8.1f}")
    report.line("Viterbi share of days     " + " ".join(f"{m:>5}" for m in MONTHS))
    for i in range(STATES):
        report.line(f"  {i} {names[i]:<22} "
                    + " ".join(f"{p:5.2f}" for p in share[:, i].tolist()))
    report.line("Viterbi share of days     " + " ".join(
        f"{first + y:>5}" for y in range(len(by_year))))
    for i in range(STATES):
        report.line(f"  {i} {names[i]:<22} "
                    + " ".join(f"{p:5.2f}" for p in by_year[:, i].tolist()))
    for key, value in {"trajectory": fitted.log_likelihood, "converged": fitted.converged,
                       "start": tables["start"][order].tolist(), "trans": trans.tolist(),
                       "emit": emit.tolist(), "state_names": names,
                       "viterbi_share_by_month": share.tolist(),
                       "viterbi_share_by_year": by_year.tolist(),
                       "viterbi_path": path.tolist()}.items():
        report.metric(key, value)
    if config.out is not None:
        _plot(report, fitted.log_likelihood, share, emit, names)


def _state_order(emit: torch.Tensor) -> list[int]:
    """States sorted by P(sun), most sunny first, so that runs from any seed read alike
    (EM's answer is unique only up to relabelling the states)."""
    return torch.argsort(emit[:, SYMBOLS.index("sun")], descending=True).tolist()


def _state_name(row: torch.Tensor) -> str:
    """A label from the state's two most likely labels, e.g. ``rain/sun``."""
    top = torch.argsort(row, descending=True)[:2].tolist()
    return "/".join(SYMBOLS[k] for k in top)


def _share_by(path: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """``(groups, K)``: the fraction of each group's days (group indices ``0..groups-1``)
    that the Viterbi path spends in each state."""
    counts = torch.zeros(groups, STATES, dtype=torch.float64)
    counts.index_put_((group, path), torch.ones(len(path), dtype=torch.float64),
                      accumulate=True)
    return counts / counts.sum(-1, keepdim=True)


def _plot(report: Report, trajectory: list[float], share: torch.Tensor,
          emit: torch.Tensor, names: list[str]) -> None:
    """Regime share by month (stacked bars), the emission table, and the EM trajectory."""
    with report.figure("weather_hmm.png", ncols=3, figsize=(13, 3.6)) as (_, axes):
        bottom = [0.0] * 12
        for k in range(STATES):
            heights = share[:, k].tolist()
            axes[0].bar(MONTHS, heights, bottom=bottom, color=f"C{k}", label=names[k])
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        axes[0].set_ylabel("share of days (Viterbi)")
        axes[0].set_title("Hidden regime by month, Seattle 2012-2015")
        axes[0].legend(fontsize=7, loc="lower left")
        axes[0].tick_params(axis="x", labelsize=7)
        image = axes[1].imshow(emit.tolist(), cmap="Blues", vmin=0, vmax=1)
        axes[1].set_xticks(range(len(SYMBOLS)), SYMBOLS, fontsize=8)
        axes[1].set_yticks(range(STATES), names, fontsize=8)
        axes[1].set_title("P(label | regime)")
        axes[1].figure.colorbar(image, ax=axes[1], fraction=0.046)
        axes[2].plot(range(1, len(trajectory) + 1), trajectory, color="C0")
        axes[2].set_xscale("log")
        axes[2].set_xlabel("Baum-Welch iteration")
        axes[2].set_ylabel("log p(labels)")
        axes[2].set_title("Baum-Welch trajectory")


ENTRY = GalleryEntry(
    name="weather_hmm",
    title="Seattle weather 2012-2015: a 3-state HMM fitted by Baum-Welch, decoded by Viterbi",
    build=build,
    data=data,
    engines=("em",),
    experiment=experiment,
)
