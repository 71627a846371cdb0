"""PDBbind index files: the shipped samples and every line form of the real releases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from data_prep.pdbbind_index import MOLAR_PER_UNIT, RELATIONS, IndexFormatError, parse_line, read_index
from tests.helpers import SAMPLES

INDEX = SAMPLES / "pdbbind" / "index"


def _write(tmp_path, text, name="INDEX_general_PL_data.2020"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_shipped_general_index():
    entries, errors = read_index(str(INDEX / "INDEX_general_PL_data.2016"))
    assert errors == []
    by_code = {e.code: e for e in entries}
    assert sorted(by_code) == ["10gs", "1imx", "1k9q", "1nlo", "1nlp", "4yef"]
    nmr = by_code["1k9q"]
    assert (nmr.resolution, nmr.year, nmr.affinity, nmr.measure, nmr.relation) == (None, 2001, 3.15, "Kd", "=")
    assert nmr.value == pytest.approx(700e-6)
    assert nmr.ligand == "7-mer"
    assert nmr.line == 5  # four comment lines first
    ki = by_code["10gs"]
    assert (ki.resolution, ki.measure, ki.ligand) == (2.20, "Ki", "3-mer")
    assert ki.value == pytest.approx(0.4e-6)
    assert -math.log10(ki.value) == pytest.approx(ki.affinity, abs=0.01)


def test_core_and_refined_indexes_are_subsets_of_the_general_one():
    general = {e.code: e for e in read_index(str(INDEX / "INDEX_general_PL_data.2016"))[0]}
    for name in ("INDEX_refined_data.2016", "INDEX_core_data.2016"):
        entries, errors = read_index(str(INDEX / name))
        assert not errors and entries
        for entry in entries:
            assert entry.affinity == general[entry.code].affinity


@pytest.mark.parametrize(
    "measurement, measure, relation, molar",
    [
        ("IC50=15uM", "IC50", "=", 15e-6),
        ("Ki<10nM", "Ki", "<", 10e-9),
        ("Kd>1mM", "Kd", ">", 1e-3),
        ("Ki<=2.5pM", "Ki", "<=", 2.5e-12),
        ("IC50>=0.3M", "IC50", ">=", 0.3),
        ("Kd~40fM", "Kd", "~", 40e-15),
        ("Kd=.5nM", "Kd", "=", 0.5e-9),
    ],
)
def test_measurement_forms(measurement, measure, relation, molar):
    line = f"2XYZ  1.95  2019   6.00  {measurement:<13} // 2xyz.pdf (L1) covalent complex\n"
    entry = parse_line(line, "index", 7)
    assert (entry.code, entry.measure, entry.relation, entry.ligand) == ("2xyz", measure, relation, "L1")
    assert entry.value == pytest.approx(molar)
    assert entry.affinity == 6.0 and entry.resolution == 1.95 and entry.year == 2019


def test_casf_core_set_dat(tmp_path):
    path = _write(
        tmp_path,
        "#code  resl  year  logKa  Ka  target\n"
        "1a30  2.00  1998   4.30  Ki=50uM  1\n"
        "4yef  1.72  2015  5.35  Kd=4.44uM 57\n",
        "CoreSet.dat",
    )
    entries, errors = read_index(path)
    assert errors == []
    assert [(e.code, e.resolution, e.year, e.affinity, e.measure, e.ligand) for e in entries] == [
        ("1a30", 2.0, 1998, 4.30, "Ki", None),
        ("4yef", 1.72, 2015, 5.35, "Kd", None),
    ]


def test_malformed_lines_are_collected_with_file_and_line(tmp_path):
    text = (
        "# comment\n"
        "\n"
        "1abc  2.00  2001   5.00  Kd=10uM   // 1abc.pdf (ABC)\n"
        "1abd  2.00  2001   5.00  Kx=10uM   // bad measure\n"
        "1abe  2.00  2001   5.00  Kd=10kM   // bad unit\n"
        "1abf  X-RAY 2001   5.00  Kd=10uM   // bad resolution\n"
        "1abg  2.00  20x1   5.00  Kd=10uM   // bad year\n"
        "abcd  2.00  2001   5.00  Kd=10uM   // bad code\n"
        "1abh  2.00  2001   Kd=10uM         // missing field\n"
        "1abi  2.00  2001   nan   Kd=10uM   // not a number\n"
        "1abj  2.00  2001   5.00  Kd=0uM    // zero\n"
        "1abk  2.00  2001   5.00  Kd=1uM  x // target not an int\n"
    )
    path = _write(tmp_path, text)
    entries, errors = read_index(path)
    assert [e.code for e in entries] == ["1abc"]
    assert [e.line for e in errors] == list(range(4, 13))
    assert all(str(e).startswith(f"{path}:{e.line}: ") for e in errors)
    assert "measurement 'Kx=10uM'" in errors[0].problem and "'Kd=10kM'" in errors[1].problem
    with pytest.raises(IndexFormatError, match=r"index:3: .*PDB code 'abcd'"):
        parse_line("abcd  2.00  2001   5.00  Kd=10uM  // x (Y)", "index", 3)
    with pytest.raises(ValueError, match="target cluster 'x'"):
        parse_line("1abk  2.00  2001   5.00  Kd=1uM  x", "index", 4)
    with pytest.raises(ValueError, match="4 fields before '//'"):
        parse_line("1abh  2.00  2001   Kd=10uM  // 1abh.pdf (L)", "index", 5)


@given(
    number=st.floats(min_value=1e-3, max_value=1e3, allow_nan=False),
    relation=st.sampled_from(RELATIONS),
    unit=st.sampled_from(sorted(MOLAR_PER_UNIT)),
)
def test_value_in_molar_is_number_times_unit(number, relation, unit):
    entry = parse_line(f"3abc NMR 2010 4.00 Ki{relation}{number:.6g}{unit} // r (LIG)", "index", 1)
    assert entry.relation == relation and entry.resolution is None
    assert entry.value == pytest.approx(float(f"{number:.6g}") * MOLAR_PER_UNIT[unit])
