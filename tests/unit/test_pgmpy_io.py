"""``from_pgmpy``: a pgmpy network becomes the same model ``read_bif`` makes from the same
file, hand-built networks keep their tables and state names, and unsupported input is a clear
``ModelError`` naming the variable."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import genppl
from genppl import ModelError
from genppl.bif import read_bif
from genppl.pgmpy_io import from_pgmpy

pytestmark = pytest.mark.unit
F64 = torch.float64

pgmpy = pytest.importorskip("pgmpy", reason="pgmpy (dev/gallery extra) is not installed")
from pgmpy.factors.discrete import TabularCPD  # noqa: E402
from pgmpy.models import DiscreteBayesianNetwork  # noqa: E402

EXAMPLES = Path(pgmpy.__file__).parent / "utils" / "example_models"


def _example(name: str) -> DiscreteBayesianNetwork:
    with warnings.catch_warnings():  # get_example_model announces its deprecation
        warnings.simplefilter("ignore", FutureWarning)
        from pgmpy.utils import get_example_model

        return get_example_model(name)


@pytest.mark.parametrize("network", ["asia", "child", "alarm"])
def test_same_model_as_read_bif_on_the_same_file(network: str) -> None:
    converted = from_pgmpy(_example(network))
    read = read_bif(EXAMPLES / f"{network}.bif.gz")
    assert list(converted.nodes) == list(read.nodes)
    for name, node in read.nodes.items():
        other = converted[name]
        assert other.states == node.states
        assert [p.node for p in other.parents] == [p.node for p in node.parents]
        torch.testing.assert_close(other.fn.table, node.fn.table, rtol=0, atol=0)


def _student() -> DiscreteBayesianNetwork:
    """Two parents with unnamed (integer) states and a child with named ones, declared child
    first so the conversion must reorder them parents first."""
    bn = DiscreteBayesianNetwork([("difficulty", "grade"), ("aptitude", "grade")])
    bn.add_cpds(
        TabularCPD("grade", 3, [[0.3, 0.05, 0.9, 0.5],
                                [0.4, 0.25, 0.08, 0.3],
                                [0.3, 0.7, 0.02, 0.2]],
                   evidence=["difficulty", "aptitude"], evidence_card=[2, 2],
                   state_names={"grade": ["A", "B", "C"], "difficulty": [0, 1],
                                "aptitude": [0, 1]}),
        TabularCPD("difficulty", 2, [[0.6], [0.4]]),
        TabularCPD("aptitude", 2, [[0.7], [0.3]]))
    return bn


def test_hand_built_network_keeps_tables_and_states() -> None:
    model = from_pgmpy(_student(), name="student")
    assert model.name == "student"
    assert list(model.nodes).index("grade") == 2
    assert model["grade"].states == ("A", "B", "C")
    assert model["difficulty"].states == ("0", "1")
    # P(grade = A | difficulty = 1, aptitude = 0) is column (1, 0) of pgmpy's flattened table.
    assert float(model["grade"].fn.table[1, 0, 0]) == pytest.approx(0.9, abs=1e-15)
    post = genppl.infer(model.to(dtype=F64), {"grade": torch.tensor(0)}, engine="exact")
    joint = {(d, a): [0.6, 0.4][d] * [0.7, 0.3][a] * [[0.3, 0.05], [0.9, 0.5]][d][a]
             for d in (0, 1) for a in (0, 1)}
    p_hard = (joint[1, 0] + joint[1, 1]) / sum(joint.values())
    assert float(post.marginals["difficulty"][1]) == pytest.approx(p_hard, abs=1e-12)


def test_missing_cpd_names_the_variable() -> None:
    bn = _student()
    bn.remove_cpds("aptitude")
    with pytest.raises(ModelError, match=r"'aptitude' has no CPD.*add_cpds"):
        from_pgmpy(bn)


def test_continuous_networks_are_refused() -> None:
    from pgmpy.models import LinearGaussianBayesianNetwork

    with pytest.raises(ModelError, match="LinearGaussianBayesianNetwork"):
        from_pgmpy(LinearGaussianBayesianNetwork([("x", "y")]))


def test_rows_that_do_not_sum_to_one_name_the_variable() -> None:
    bn = DiscreteBayesianNetwork()
    bn.add_node("coin")
    cpd = TabularCPD("coin", 2, [[0.5], [0.5]])
    cpd.values[0] = 0.6  # past pgmpy's own check, as a hand-edited table would be
    bn.add_cpds(cpd)
    with pytest.raises(ModelError, match=r"pgmpy CPD of 'coin'.*summing to 1.1"):
        from_pgmpy(bn)
