"""flowzoo.biology.sequences.alphabets: alphabets, FASTA round trips, encodings and their errors."""

import os

import pytest
import torch

from flowzoo.biology.sequences.alphabets import (BASE64, DNA, PROTEIN, Alphabet, FastaRecord, SequenceError,
                                       check_simplex_tensor, decode_tokens, encode_records, one_hot, read_fasta,
                                       write_fasta)
from flowzoo.core.errors import DTypeError, EmptyInputError, ShapeError

FASTA = """>seq1 first record; source=test
ACGTAC
GTAC
; a comment kept with seq2
>seq2
acgtacgtac

>seq3 lower-case soft-masked
ACGTA
CGTAC
"""


def test_builtin_alphabets_sizes_and_round_trip():
    assert (DNA.size, PROTEIN.size, BASE64.size) == (4, 20, 64)
    assert Alphabet.from_name("Protein") is PROTEIN and Alphabet.from_name("xyz").letters == "xyz"
    for alphabet in (DNA, PROTEIN, BASE64):
        text = alphabet.letters[::-1] * 2
        assert alphabet.decode(alphabet.encode(text)) == text
    assert DNA.encode("acgt").tolist() == [0, 1, 2, 3]
    assert BASE64.encode("aA").tolist() == [26, 0]  # case-sensitive
    with pytest.raises(SequenceError, match="'=' at position 2"):
        BASE64.encode("A=")
    assert Alphabet.from_dict(BASE64.to_dict()) == BASE64


def test_alphabet_rejects_duplicates_and_fasta_syntax():
    with pytest.raises(SequenceError, match="repeated"):
        Alphabet("ACCA")
    with pytest.raises(SequenceError, match="whitespace"):
        Alphabet("A C")


def test_read_fasta_multiline_headers_and_comments(tmp_path):
    path = tmp_path / "in.fa"
    path.write_text(FASTA)
    records = read_fasta(path)
    assert [r.identifier for r in records] == ["seq1", "seq2", "seq3"]
    assert records[0].header == "seq1 first record; source=test"
    assert records[0].sequence == "ACGTACGTAC" and records[2].sequence == "ACGTACGTAC"
    assert records[1].comments == [" a comment kept with seq2"]
    tokens = encode_records(records, DNA)
    assert tokens.shape == (3, 10) and (tokens[0] == tokens[1]).all()
    assert decode_tokens(tokens, DNA)[1] == "ACGTACGTAC"


def test_write_fasta_wraps_atomically_and_round_trips(tmp_path):
    records = [FastaRecord("a desc", "ACGT" * 5, [" note"]), FastaRecord("b", "TTTT")]
    path = write_fasta(tmp_path / "out" / "x.fa", records, width=8)
    text = path.read_text()
    assert text.splitlines()[:4] == [">a desc", "; note", "ACGTACGT", "ACGTACGT"]
    again = read_fasta(path)
    assert [(r.header, r.sequence, r.comments) for r in again] == [(r.header, r.sequence, r.comments) for r in records]
    write_fasta(path, [("c", "GG")])  # replacing leaves no temporary file behind
    assert sorted(os.listdir(path.parent)) == ["x.fa"] and read_fasta(path)[0].sequence == "GG"


def test_foreign_letter_names_letter_record_and_position(tmp_path):
    path = tmp_path / "bad.fa"
    path.write_text(">ok\nACGT\n>broken sample\nACXT\n")
    before = path.read_bytes()
    with pytest.raises(SequenceError) as info:
        encode_records(read_fasta(path), DNA)
    message = str(info.value)
    assert "'X'" in message and "position 3" in message and "'broken'" in message and "Fix:" in message
    assert path.read_bytes() == before


@pytest.mark.parametrize("text", ["", "\n\n", "; only a comment\n"])
def test_empty_fasta_raises(tmp_path, text):
    path = tmp_path / "empty.fa"
    path.write_text(text)
    with pytest.raises(EmptyInputError, match="at least one '>' record"):
        read_fasta(path)


def test_sequence_before_header_and_unequal_lengths(tmp_path):
    path = tmp_path / "x.fa"
    path.write_text("ACGT\n>a\nACGT\n")
    with pytest.raises(SequenceError, match="line 1"):
        read_fasta(path)
    with pytest.raises(ShapeError, match=r"length 3 in record 'b' \(number 2\)"):
        encode_records([FastaRecord("a", "ACGT"), FastaRecord("b", "ACG")], DNA)
    with pytest.raises(EmptyInputError):
        encode_records([FastaRecord("a", "")], DNA)
    with pytest.raises(EmptyInputError):
        encode_records([], DNA)


def test_one_hot_and_simplex_checks():
    x = one_hot(torch.tensor([[0, 3, 1]]), 4)
    assert x.shape == (1, 3, 4) and x.sum(-1).eq(1).all()
    check_simplex_tensor(x)
    with pytest.raises(DTypeError):
        one_hot(torch.tensor([0.0, 1.0]), 4)
    with pytest.raises(SequenceError, match=r"indices in \[0, 4\)"):
        one_hot(torch.tensor([4]), 4)
    with pytest.raises(SequenceError, match="simplex"):
        check_simplex_tensor(x * 2)
    with pytest.raises(ShapeError):
        check_simplex_tensor(torch.ones(3, 4) / 4)


def test_case_rule_is_one_rule_for_every_alphabet():
    from flowzoo.biology.sequences.alphabets import Alphabet, BASE64

    custom = Alphabet.from_name("acgtn")
    assert not custom.case_sensitive
    assert custom.encode("ACgtN").tolist() == [0, 1, 2, 3, 4]
    assert custom.decode([0, 3]) == "at"
    assert Alphabet("aAb").case_sensitive and BASE64.case_sensitive
    assert Alphabet.from_dict(custom.to_dict()) == custom
    with pytest.raises(SequenceError):
        Alphabet("aAb", case_sensitive=False)
