"""PDBbind complexes -> graphs, on the six shipped complexes: features, edges, positional
encoding, bad complexes, and mpnn-prep-pdbbind end to end."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from rdkit import Chem

from data_prep.pdbbind import (
    ATOM_FEATURE_NAMES,
    ELEMENT_VOCAB,
    FEATURES,
    ComplexError,
    complex_graph,
    random_walk_encoding,
    read_ligand,
    read_pocket,
)
from data_prep.pdbbind_index import read_index
from data_prep.prep_pdbbind import load_indexes, plan_tasks
from mpnn.cli.prep_pdbbind import main
from mpnn.data import parse_spec
from mpnn.graph_format.features import N_ATOM_FEATURES, RWPE_ORDER
from tests.helpers import SAMPLES

PDBBIND = SAMPLES / "pdbbind"
GENERAL = PDBBIND / "index" / "INDEX_general_PL_data.2016"
CORE = PDBBIND / "index" / "INDEX_core_data.2016"
CODES = ["10gs", "1imx", "1k9q", "1nlo", "1nlp", "4yef"]
CUTOFF = 4.5  # Angstrom; at the default 2.5 some sample ligands touch no pocket heavy atom
COLUMN = {name: i for i, name in enumerate(ATOM_FEATURE_NAMES)}


def _node_positions(code: str) -> np.ndarray:
    """Heavy-atom positions in node order (ligand, then pocket), read independently with RDKit."""
    parts = []
    for mol in (read_ligand(str(PDBBIND / code / f"{code}_ligand.sdf"), "").mol,
                read_pocket(str(PDBBIND / code / f"{code}_pocket.pdb")).mol):
        heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
        parts.append(mol.GetConformer().GetPositions()[heavy])
    return np.concatenate(parts)


def _writable_copy(tmp_path):
    """The sample tree (read-only in the repository) copied to tmp, writable."""
    root = tmp_path / "pdbbind"
    shutil.copytree(PDBBIND, root, copy_function=shutil.copyfile)
    for directory, _, _ in os.walk(root):
        os.chmod(directory, 0o755)
    return root


def _records(out, split=None) -> dict[str, dict]:
    """Parsed records of the data set in `out` (optionally one split), by record id."""
    manifest = json.loads((out / "manifest.json").read_text())
    result = {}
    for name, entry in manifest["splits"].items():
        for shard in entry["shards"]:
            if split not in (None, name):
                continue
            raw = list(tf.data.TFRecordDataset(str(out / shard["file"]), compression_type="GZIP"))
            assert len(raw) == shard["records"]
            for record in tf.io.parse_example(tf.stack(raw), parse_spec(FEATURES))["record_id"].numpy():
                result[record.decode()] = name
    return result


def test_feature_names_fill_the_schema():
    assert len(ATOM_FEATURE_NAMES) == len(set(ATOM_FEATURE_NAMES)) == N_ATOM_FEATURES
    assert ATOM_FEATURE_NAMES[-1] == "ligand"


def test_aromatic_ligand_carbon_and_one_hot_groups():
    ligand = Chem.MolFromMolFile(str(PDBBIND / "10gs" / "10gs_ligand.sdf"))
    carbon = next(a for a in ligand.GetAtoms() if a.GetIsAromatic() and a.GetSymbol() == "C")
    graph = complex_graph(str(PDBBIND / "10gs"), 6.40, cutoff=CUTOFF)
    row = graph["atom_features"][carbon.GetIdx()]  # the 10gs ligand has no H: node i = atom i
    heavy = sum(n.GetAtomicNum() > 1 for n in carbon.GetNeighbors())
    on = {name for name, value in zip(ATOM_FEATURE_NAMES, row) if value == 1}
    assert {"element_C", "hybridisation_sp2", "aromatic", "in_ring", "ligand", f"heavy_degree_{heavy}"} <= on
    assert "hetero_degree_0" in on and "hbond_donor" not in on
    assert row[COLUMN["hydrogen_count"]] == carbon.GetTotalNumHs()
    assert graph["atom"][carbon.GetIdx()] == ELEMENT_VOCAB.index("C")

    features = graph["atom_features"]
    groups = [[i for i, n in enumerate(ATOM_FEATURE_NAMES) if n.startswith(p)]
              for p in ("element_", "hybridisation_", "heavy_degree_", "hetero_degree_")]
    for group in groups:
        assert np.all(features[:, group].sum(axis=1) == 1)
    n_ligand = ligand.GetNumAtoms()
    assert np.all(features[:n_ligand, COLUMN["ligand"]] == 1) and np.all(features[n_ligand:, COLUMN["ligand"]] == 0)
    assert np.all(np.argmax(features[:, groups[0]], axis=1) == graph["atom"])
    assert features[:, COLUMN["hbond_donor"]].any() and features[:, COLUMN["hbond_acceptor"]].any()
    assert features[:, COLUMN["hydrophobic"]].any() and np.abs(features[:, COLUMN["gasteiger_charge"]]).max() < 2


@pytest.mark.parametrize("code", ["1nlo", "4yef"])
def test_edges_are_every_pair_within_the_cutoff(code):
    graph = complex_graph(str(PDBBIND / code), 5.0, cutoff=CUTOFF)
    positions = _node_positions(code)
    assert len(positions) == graph["n_atom"]
    distance = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    receivers, senders = np.nonzero((distance <= CUTOFF) & ~np.eye(len(positions), dtype=bool))  # row-major: sorted
    np.testing.assert_array_equal(graph["connectivity"], np.stack([receivers, senders], axis=1))
    np.testing.assert_allclose(graph["distance"], distance[receivers, senders], rtol=1e-6)
    is_ligand = graph["atom_features"][:, COLUMN["ligand"]] == 1
    expected_type = np.where(is_ligand[receivers] != is_ligand[senders], 2, np.where(is_ligand[receivers], 0, 1))
    np.testing.assert_array_equal(graph["bond"], expected_type)
    assert graph["n_bond"] == len(receivers) and set(np.unique(graph["bond"])) == {0, 1, 2}


def test_random_walk_encoding_equals_dense_matrix_powers():
    graph = complex_graph(str(PDBBIND / "4yef"), 5.35)  # default 2.5 Angstrom: some atoms are isolated
    n = int(graph["n_atom"])
    adjacency = np.zeros((n, n))
    adjacency[graph["connectivity"][:, 0], graph["connectivity"][:, 1]] = 1
    degree = adjacency.sum(axis=1, keepdims=True)
    walk = np.divide(adjacency, degree, out=np.zeros_like(adjacency), where=degree > 0)
    expected = np.stack([np.diag(np.linalg.matrix_power(walk, k)) for k in range(1, RWPE_ORDER + 1)], axis=1)
    np.testing.assert_allclose(graph["rwpe"], expected, atol=1e-6)
    assert (degree == 0).any()  # e.g. pocket waters ...
    assert np.all(graph["rwpe"][degree[:, 0] == 0] == 0)  # ... whose rows are zero

    # A single edge and an isolated atom: returns after every even number of steps.
    encoding = random_walk_encoding(3, np.array([0, 1]), np.array([1, 0]))
    np.testing.assert_array_equal(encoding[0], np.arange(1, RWPE_ORDER + 1) % 2 == 0)
    np.testing.assert_array_equal(encoding[2], 0)


def test_complex_errors(tmp_path):
    with pytest.raises(ComplexError, match="no affinity") as info:
        complex_graph(str(PDBBIND / "1nlo"), None)
    assert info.value.reason == "no affinity"
    # The study's 2.5 Angstrom heavy-atom cutoff: 10gs's nearest contact is 2.66, so its
    # graph has no ligand-protein edge, which is allowed.
    assert not np.any(complex_graph(str(PDBBIND / "10gs"), 6.40)["bond"] == 2)

    root = _writable_copy(tmp_path)
    moved = Chem.MolFromMolFile(str(root / "10gs" / "10gs_ligand.sdf"), removeHs=False)
    for i in range(moved.GetNumAtoms()):
        position = moved.GetConformer().GetAtomPosition(i)
        moved.GetConformer().SetAtomPosition(i, (position.x + 30.0, position.y, position.z))
    Chem.MolToMolFile(moved, str(root / "10gs" / "10gs_ligand.sdf"))
    with pytest.raises(ComplexError, match="ligand not in pocket"):
        complex_graph(str(root / "10gs"), 6.40)
    ligand = Chem.MolFromMolFile(str(root / "1nlo" / "1nlo_ligand.sdf"), removeHs=False)
    for i in range(ligand.GetNumAtoms()):
        ligand.GetConformer().SetAtomPosition(i, (0.0, 0.0, 0.0))
    Chem.MolToMolFile(ligand, str(root / "1nlo" / "1nlo_ligand.sdf"))
    with pytest.raises(ComplexError, match="bad coordinates") as info:
        complex_graph(str(root / "1nlo"), 5.47, cutoff=CUTOFF)
    assert info.value.path.endswith("1nlo_ligand.sdf")


def test_ligand_falls_back_to_mol2(tmp_path):
    """4yef's SDF truncated, a MOL2 of the same ligand beside it: the MOL2 is used."""
    root = _writable_copy(tmp_path)
    sdf = root / "4yef" / "4yef_ligand.sdf"
    mol = Chem.MolFromMolFile(str(sdf), removeHs=False)  # a sugar: only C.3, O.3, H and single bonds
    lines = ["@<TRIPOS>MOLECULE", "4yef_ligand", f"{mol.GetNumAtoms()} {mol.GetNumBonds()} 0 0 0", "SMALL",
             "NO_CHARGES", "", "@<TRIPOS>ATOM"]
    for atom, (x, y, z) in zip(mol.GetAtoms(), mol.GetConformer().GetPositions()):
        kind = "H" if atom.GetSymbol() == "H" else f"{atom.GetSymbol()}.3"
        lines.append(f"{atom.GetIdx() + 1} {atom.GetSymbol()} {x:.4f} {y:.4f} {z:.4f} {kind} 1 LIG 0.0")
    lines.append("@<TRIPOS>BOND")
    lines += [f"{b.GetIdx() + 1} {b.GetBeginAtomIdx() + 1} {b.GetEndAtomIdx() + 1} 1" for b in mol.GetBonds()]
    (root / "4yef" / "4yef_ligand.mol2").write_text("\n".join(lines) + "\n")
    sdf.write_text("\n".join(sdf.read_text().splitlines()[:40]) + "\n")

    graph = complex_graph(str(root / "4yef"), 5.35, cutoff=CUTOFF)
    original = complex_graph(str(PDBBIND / "4yef"), 5.35, cutoff=CUTOFF)
    assert graph["note"] == "ligand from mol2"
    np.testing.assert_array_equal(graph["connectivity"], original["connectivity"])
    np.testing.assert_allclose(graph["atom_features"], original["atom_features"], atol=1e-5)


def test_bad_complexes_are_skipped_and_the_rest_convert(tmp_path):
    root = _writable_copy(tmp_path)
    sdf = root / "1k9q" / "1k9q_ligand.sdf"  # truncated, no mol2
    sdf.write_text("\n".join(sdf.read_text().splitlines()[:30]) + "\n")
    (root / "1nlp" / "1nlp_pocket.pdb").unlink()
    for code, element in (("1imx", "Xx"), ("10gs", "ZN")):  # unknown to RDKit / known, not in the vocab
        pocket = root / code / f"{code}_pocket.pdb"
        lines = pocket.read_text().splitlines()
        i = next(k for k, line in enumerate(lines) if line.startswith("ATOM"))
        lines[i] = lines[i][:76] + element + lines[i][78:]
        pocket.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main([str(root), "--index", str(GENERAL), "-o", str(out), "--cutoff", str(CUTOFF), "--quiet"]) == 0

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"] == {"converted": 3, "skipped": 5}
    skipped = {os.path.basename(s["source"]): s["reason"] for s in manifest["skipped"]}
    assert skipped["1k9q_ligand.sdf"].startswith("unreadable ligand: ")
    assert skipped["1nlp_pocket.pdb"].startswith("missing file: ")
    assert skipped["1imx_pocket.pdb"].startswith("unreadable pocket: ")
    assert skipped["index"] == "not a complex directory: name is not a PDB code"
    assert skipped["LICENSE.oddt"] == "not a complex directory: a file"
    reasons = {"missing file": 1, "not a complex directory": 2, "unreadable ligand": 1, "unreadable pocket": 1}
    assert manifest["totals"]["skipped_by_reason"] == reasons
    assert sorted(_records(out)) == ["10gs", "1nlo", "4yef"]
    assert manifest["target_stats"]["per_atom_type_mean"].keys() == set(ELEMENT_VOCAB)
    assert any(s["path"].endswith("10gs_pocket.pdb") and s["records"] == 1 for s in manifest["sources"])
    zinc = complex_graph(str(root / "10gs"), 6.40, cutoff=CUTOFF)
    assert np.sum(zinc["atom"] == ELEMENT_VOCAB.index("other")) == 1


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "out"
    args = [str(PDBBIND), "--index", str(GENERAL), "-o", str(out), "--cutoff", str(CUTOFF), "--shards", "2", "--quiet"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "pdbbind" and manifest["summary"] == {"converted": 6, "skipped": 2}  # index/, LICENSE
    assert manifest["target"] == {"name": "affinity", "units": "-log10(K/M)", "extensive": False}
    assert manifest["vocab"]["atom"] == list(ELEMENT_VOCAB)
    assert manifest["vocab"]["bond"] == ["intra-ligand", "intra-protein", "ligand-protein"]
    assert manifest["atom_features"] == list(ATOM_FEATURE_NAMES)
    assert (manifest["cutoff"], manifest["rwpe_order"]) == (CUTOFF, RWPE_ORDER)
    assert manifest["features"]["atom_features"]["inner_shape"] == [N_ATOM_FEATURES]
    assert sorted(_records(out)) == CODES

    files = [str(out / s["file"]) for split in manifest["splits"].values() for s in split["shards"]]
    raw = tf.stack(list(tf.data.TFRecordDataset(files, compression_type="GZIP")))
    parsed = tf.io.parse_example(raw, parse_spec(FEATURES))
    assert manifest["totals"]["atoms"] == int(tf.reduce_sum(parsed["n_atom"]))
    assert manifest["totals"]["edges"] == int(tf.reduce_sum(parsed["n_bond"]))
    np.testing.assert_array_equal(parsed["atom_features"].row_lengths(), parsed["n_atom"] * N_ATOM_FEATURES)
    affinity = dict(zip(parsed["record_id"].numpy(), parsed["affinity"].numpy()))
    assert affinity[b"1k9q"] == pytest.approx(3.15)


@pytest.mark.parametrize(
    "split_args, test_codes",
    [(["--split", "core", "--core-index", str(CORE)], {"4yef", "10gs"}),
     (["--split", "year", "--test-from-year", "2001"], {"1k9q", "1imx", "4yef"})],
    ids=["core", "year"],
)
def test_core_and_year_splits(tmp_path, split_args, test_codes):
    out = tmp_path / "out"
    args = [str(PDBBIND), "--index", str(GENERAL), "-o", str(out), "--cutoff", str(CUTOFF), "--quiet"]
    assert main([*args, *split_args, "--fractions", "0.5", "0.5", "0"]) == 0
    by_split = _records(out)
    assert {code for code, split in by_split.items() if split == "test"} == test_codes
    assert sorted(by_split) == CODES
    rest = [split for split in by_split.values() if split != "test"]
    assert sorted(set(rest)) == ["train", "valid"]


def test_filters_and_bad_index_lines_become_skips(tmp_path):
    index = tmp_path / "INDEX"
    index.write_text(
        "10gs  2.20  1998   6.40  IC50=0.4uM   // 10gs.pdf (3-mer)\n"
        "1nlo   NMR  1997   5.47  Kd<3.4uM     // 1nlo.pdf (11-mer)\n"
        "1nlp   NMR  1997   4.96  Kd=11uM      // 1nlp.pdf (10-mer)\n"
        "1imx  1.82  2001   3.52  Kd=300xM     // 1imx.pdf (CPQ)\n"
    )
    entries, errors = load_indexes([str(index)])
    tasks = plan_tasks([str(PDBBIND)], entries, errors, drop_ic50=True, drop_inequalities=True)
    skips = {t.skip.reason.split(":")[0]: t.skip for t in tasks if t.skip}
    assert set(skips) == {"bad index line", "IC50 dropped", "inequality dropped"}
    assert (skips["bad index line"].source, skips["bad index line"].index) == (str(index), 4)
    kept = {os.path.basename(t.directory): t.affinity for t in tasks if t.skip is None}
    assert kept == {"1imx": None, "1k9q": None, "1nlp": 4.96, "4yef": None}  # no affinity -> skipped later
    assert read_index(str(index))[1][0].line == 4
