"""The one node-chain table, as the phantom and the lesion prior read it."""

from __future__ import annotations

import numpy as np
import pytest

from synthaug.core.demographics import DIAGNOSES, Demographics
from synthaug.core.grid import Grid
from synthaug.phantom.body import lesion_plan, make_phantom
from synthaug.phantom.lesions import SITES, CaseAnatomy, check_plan
from synthaug.phantom.node_chains import NODE_CHAINS, NodeChain, node_site_names, split_node_site

GRID = Grid((64, 64, 128), (8.0, 8.0, 8.0))
DEMO = Demographics(age=55, sex="M", height_cm=178, weight_kg=80, diagnosis="NEGATIVE")


@pytest.fixture(scope="module")
def anatomy():
    return CaseAnatomy(make_phantom(DEMO, grid=GRID, seed=3), DEMO.height_cm)


def test_a_chain_without_a_place_for_each_level_is_refused():
    with pytest.raises(ValueError, match="2 levels and 1 places"):
        NodeChain((0.1, 0.2), ((0.5, 0.5),))
    with pytest.raises(ValueError, match="two or more points"):
        NodeChain((0.1,), ((0.5, 0.5),))


def test_sites_name_their_chain_and_side():
    assert split_node_site("node:axillary_L") == ("axillary", -1)
    assert split_node_site("node:axillary_R") == ("axillary", 1)
    assert split_node_site("node:mediastinal") == ("mediastinal", 1)
    assert {"cervical_R", "cervical_L", "mediastinal"} <= set(node_site_names())
    assert "mediastinal_R" not in node_site_names()
    for bad in ("node:tonsillar_R", "axillary_R", "liver"):
        with pytest.raises(ValueError, match="not a node site"):
            split_node_site(bad)


def test_every_node_site_the_lesion_model_draws_is_in_the_table():
    drawn = set()
    for diagnosis in DIAGNOSES:
        for seed in range(200):
            drawn |= {site for site, _, _ in lesion_plan(diagnosis, np.random.default_rng(seed))}
    nodes = {site.removeprefix("node:") for site in drawn if site.startswith("node:")}
    assert nodes and nodes <= set(node_site_names()), nodes - set(node_site_names())
    assert drawn - {"node:" + n for n in nodes} <= set(SITES)


def test_a_plan_with_an_unknown_chain_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"plan\[1\]: site 'node:tonsillar' is not known"):
        check_plan([("liver", 12, 5), ("node:tonsillar", 10, 4)])


@pytest.mark.parametrize("site", ["node:" + n for n in node_site_names()])
def test_the_prior_places_each_chains_points_at_the_tables_levels(anatomy, site):
    chain, side = split_node_site(site)
    pts = anatomy.chain_points(site)
    assert pts is not None and len(pts) == len(NODE_CHAINS[chain].levels)
    want_z = [anatomy.z_vertex - s * anatomy.height_mm for s in NODE_CHAINS[chain].levels]
    assert np.allclose(pts[:, 2], want_z, atol=GRID.spacing[2] / 2 + 1e-6)
    if NODE_CHAINS[chain].sided:  # the left chain mirrors the right one about the body's centre
        other = anatomy.chain_points(site[:-1] + ("L" if side == 1 else "R"))
        assert np.all(np.sign(pts[:, 0] - other[:, 0]) == side)


def test_the_nearest_chain_point_follows_a_bent_chain(anatomy, monkeypatch):
    """On a chain bent at its middle point, a point beside the bend projects onto the bend, not onto
    the straight line between the chain's ends."""
    bent = np.array([[0.0, 0.0, 100.0], [40.0, 0.0, 50.0], [0.0, 0.0, 0.0]])
    monkeypatch.setattr(anatomy, "chain_points", lambda site: bent)
    probe = np.array([45.0, 0.0, 50.0])
    assert np.allclose(anatomy.nearest_on_chain("node:mediastinal", probe), [40.0, 0.0, 50.0])
    assert np.allclose(anatomy.nearest_on_chain("node:mediastinal", [0.0, 0.0, 120.0]), [0.0, 0.0, 100.0])
