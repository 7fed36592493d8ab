"""Biological sequences as tensors: alphabets, FASTA files and one-hot encodings.

An :class:`Alphabet` maps single-character tokens to indices ``0..K-1``. Three are built in: DNA (``ACGT``,
K = 4), protein (the 20 standard amino acids ``ACDEFGHIKLMNPQRSTVWY``) and ``base64`` (the 64 characters
``A-Z a-z 0-9 + /``, a stand-in for any 64-token vocabulary such as codons); any string of distinct
characters is an alphabet too.

Case follows one rule: **an alphabet ignores case unless it holds some letter in both cases** (as ``base64``
does). So DNA, protein and a custom alphabet such as ``acgtn`` read ``a`` and ``A`` as the same token
(soft-masked lower-case DNA reads as upper-case), and letters are decoded in the alphabet's own case; base64
and any alphabet holding both ``a`` and ``A`` match exactly.

FASTA: :func:`read_fasta` reads multi-line records and keeps each header line (everything after ``>``) and
any ``;`` comment lines that precede the record's sequence; :func:`write_fasta` writes them back atomically
with wrapped sequence lines.

Encoding: :func:`encode_records` turns records into an index tensor (N, L). Generative models here work on
fixed-length sequences, so **every record must have the same length**; there is no padding (a pad token
would be generated like any other letter). A record of a different length, an empty sequence or a letter
outside the alphabet raises an error naming the record, the position and the letter.

Example:
    >>> dna = Alphabet.from_name("dna")
    >>> idx = dna.encode("ACgt")
    >>> idx.tolist(), dna.decode(idx)
    ([0, 1, 2, 3], 'ACGT')
    >>> one_hot(idx[None], dna.size).shape
    torch.Size([1, 4, 4])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from flowzoo.core.errors import DTypeError, EmptyInputError, FlowzooError, ShapeError, expected
from flowzoo.core.training import atomic_write_bytes

__all__ = [
    "Alphabet",
    "FastaRecord",
    "SequenceError",
    "DNA",
    "PROTEIN",
    "BASE64",
    "ALPHABETS",
    "read_fasta",
    "write_fasta",
    "encode_records",
    "decode_tokens",
    "one_hot",
    "check_simplex_tensor",
]


class SequenceError(FlowzooError, ValueError):
    """A sequence holds a letter outside its alphabet, or a FASTA file is malformed."""


@dataclass(frozen=True)
class Alphabet:
    """An ordered set of single-character tokens.

    Args:
        letters: the tokens, in index order; distinct single characters.
        name: a label stored in checkpoints (``"dna"``, ``"protein"``, ``"base64"`` or ``"custom"``).
        case_sensitive: None (the default) applies the module's rule: exact matching only when ``letters``
            holds some letter in both cases. True / False force it (checkpoints store the value used).
    """

    letters: str
    name: str = "custom"
    case_sensitive: bool | None = None
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.letters, str) or len(self.letters) < 2:
            raise SequenceError(expected("an alphabet of at least 2 distinct characters", repr(self.letters),
                                         "pass e.g. 'ACGT'"))
        if len(set(self.letters)) != len(self.letters):
            repeated = sorted({c for c in self.letters if self.letters.count(c) > 1})
            raise SequenceError(expected("distinct alphabet letters", f"repeated {repeated}", "remove duplicates"))
        if any(c.isspace() or c in ">;" for c in self.letters):
            raise SequenceError(expected("alphabet letters without whitespace, '>' or ';' (FASTA syntax)",
                                         repr(self.letters), "pick other characters"))
        if self.case_sensitive is None:
            both_cases = any(c != c.swapcase() and c.swapcase() in self.letters for c in self.letters)
            object.__setattr__(self, "case_sensitive", both_cases)
        if not self.case_sensitive and len({c.upper() for c in self.letters}) != len(self.letters):
            raise SequenceError(expected("a case-insensitive alphabet without two cases of one letter",
                                         repr(self.letters), "pass case_sensitive=True or drop one of them"))
        fold = (lambda c: c) if self.case_sensitive else str.upper
        object.__setattr__(self, "_index", {fold(c): i for i, c in enumerate(self.letters)})

    @property
    def size(self) -> int:
        """Number of tokens K."""
        return len(self.letters)

    @classmethod
    def from_name(cls, name: str) -> "Alphabet":
        """``"dna"``, ``"protein"``, ``"base64"`` (case-insensitive names), or the letters themselves."""
        if not isinstance(name, str) or not name:
            raise SequenceError(expected("an alphabet name or its letters", repr(name),
                                         f"use one of {sorted(ALPHABETS)} or a string of letters"))
        if name.lower() in ALPHABETS:
            return ALPHABETS[name.lower()]
        return cls(name)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready description (inverse: :meth:`from_dict`)."""
        return {"letters": self.letters, "name": self.name, "case_sensitive": self.case_sensitive}

    @classmethod
    def from_dict(cls, data: dict) -> "Alphabet":
        sensitive = data.get("case_sensitive")
        return cls(str(data["letters"]), str(data.get("name", "custom")), None if sensitive is None else bool(sensitive))

    def encode(self, sequence: str, record: str | None = None) -> torch.Tensor:
        """Indices (L,) of ``sequence``; a foreign letter raises :class:`SequenceError` naming it and its position."""
        text = sequence if self.case_sensitive else sequence.upper()
        try:
            return torch.tensor([self._index[c] for c in text], dtype=torch.long)
        except KeyError:
            position = next(i for i, c in enumerate(text) if c not in self._index)
            where = f" in record {record!r}" if record is not None else ""
            raise SequenceError(expected(
                f"letters of the {self.name} alphabet {self.letters!r}",
                f"{sequence[position]!r} at position {position + 1}{where}",
                "fix the sequence, or choose the alphabet that holds this letter (--alphabet)")) from None

    def decode(self, indices: torch.Tensor | Sequence[int]) -> str:
        """The string of a 1-D index sequence."""
        values = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
        if any(not 0 <= int(v) < self.size for v in values):
            bad = next(v for v in values if not 0 <= int(v) < self.size)
            raise SequenceError(expected(f"token indices in [0, {self.size})", bad, "decode with the model's alphabet"))
        return "".join(self.letters[int(v)] for v in values)


DNA = Alphabet("ACGT", "dna", case_sensitive=False)
PROTEIN = Alphabet("ACDEFGHIKLMNPQRSTVWY", "protein", case_sensitive=False)
BASE64 = Alphabet("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", "base64", case_sensitive=True)
ALPHABETS: dict[str, Alphabet] = {"dna": DNA, "protein": PROTEIN, "base64": BASE64}
"""The built-in alphabets by name."""


@dataclass
class FastaRecord:
    """One FASTA record: the header line without ``>``, its sequence, and ``;`` comment lines kept verbatim."""

    header: str
    sequence: str
    comments: list[str] = field(default_factory=list)

    @property
    def identifier(self) -> str:
        """The first word of the header."""
        return self.header.split(maxsplit=1)[0] if self.header.strip() else ""


def read_fasta(path: str | Path) -> list[FastaRecord]:
    """Read every record of a FASTA file (multi-line sequences, blank lines ignored).

    Raises:
        EmptyInputError: the file holds no record.
        SequenceError: sequence text before the first ``>`` header.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    records: list[FastaRecord] = []
    pending_comments: list[str] = []
    chunks: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if line.startswith(">"):
                if records:
                    records[-1].sequence = "".join(chunks)
                records.append(FastaRecord(line[1:].strip(), "", pending_comments))
                pending_comments, chunks = [], []
            elif line.startswith(";"):
                (records[-1].comments if records and not chunks else pending_comments).append(line[1:])
            elif line.strip():
                if not records:
                    raise SequenceError(expected("a '>' header line before any sequence",
                                                 f"{line[:30]!r} on line {number} of {path}",
                                                 "start each record with '>name'"))
                chunks.append("".join(line.split()))
    if records:
        records[-1].sequence = "".join(chunks)
        records[-1].comments.extend(pending_comments)  # trailing comments stay with the last record
    if not records:
        raise EmptyInputError(expected("a FASTA file with at least one '>' record", f"none in {path}",
                                       "check the file (an empty file or the wrong path?)"))
    return records


def write_fasta(path: str | Path, records: Iterable[FastaRecord | tuple[str, str]], width: int = 60) -> Path:
    """Write records atomically (temporary file, fsync, rename), wrapping sequences at ``width`` letters.

    Args:
        path: the output file (its parent directories are created).
        records: :class:`FastaRecord` objects or ``(header, sequence)`` pairs.
        width: letters per sequence line (0: one line per sequence).
    """
    if width < 0:
        raise SequenceError(expected("a line width >= 0", width, "use 60 (0: no wrapping)"))
    lines: list[str] = []
    for item in records:
        record = item if isinstance(item, FastaRecord) else FastaRecord(str(item[0]), str(item[1]))
        if "\n" in record.header:
            raise SequenceError(expected("a one-line header", repr(record.header), "remove the newline"))
        lines.append(">" + record.header)
        lines.extend(";" + comment for comment in record.comments)
        seq = record.sequence
        step = width or max(len(seq), 1)
        lines.extend(seq[i:i + step] for i in range(0, len(seq), step))
    path = Path(path)
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path


def encode_records(records: Sequence[FastaRecord | str], alphabet: Alphabet, length: int | None = None) -> torch.Tensor:
    """Encode equal-length sequences into indices (N, L).

    Args:
        records: FASTA records or plain strings.
        alphabet: the alphabet of the letters.
        length: the required length (default: the first record's).

    Raises:
        EmptyInputError: no records, or a record with an empty sequence.
        ShapeError: a record whose length differs (named, with both lengths).
        SequenceError: a letter outside the alphabet (letter, record and position named).
    """
    if len(records) == 0:
        raise EmptyInputError(expected("at least one sequence", "none", "pass a non-empty FASTA file"))
    rows = []
    for number, item in enumerate(records, start=1):
        name = item.identifier if isinstance(item, FastaRecord) else f"#{number}"
        seq = item.sequence if isinstance(item, FastaRecord) else str(item)
        if not seq:
            raise EmptyInputError(expected("a non-empty sequence in every record", f"an empty record {name!r}",
                                           "remove the record or add its sequence"))
        length = len(seq) if length is None else length
        if len(seq) != length:
            raise ShapeError(expected(f"sequences of one length ({length}, the first record's)",
                                      f"length {len(seq)} in record {name!r} (number {number})",
                                      "crop or filter the sequences to one length; padding is not supported"))
        rows.append(alphabet.encode(seq, record=name))
    return torch.stack(rows)


def decode_tokens(tokens: torch.Tensor, alphabet: Alphabet) -> list[str]:
    """Strings of an index tensor (N, L)."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        raise ShapeError(expected("an index tensor of shape (N, L)", getattr(tokens, "shape", type(tokens).__name__),
                                  "pass model samples as (N, L) integer indices"))
    return [alphabet.decode(row) for row in tokens]


def one_hot(tokens: torch.Tensor, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot tensor (..., K) of integer indices (...)."""
    if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise DTypeError(expected("an integer index tensor", getattr(tokens, "dtype", type(tokens).__name__),
                                  "encode letters with Alphabet.encode first"))
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= size):
        raise SequenceError(expected(f"indices in [0, {size})", f"range [{int(tokens.min())}, {int(tokens.max())}]",
                                     "use the alphabet size the tokens were encoded with"))
    return torch.nn.functional.one_hot(tokens, size).to(dtype)


def check_simplex_tensor(x: object, name: str = "x", atol: float = 1e-4) -> torch.Tensor:
    """Check that ``x`` is a finite (B, L, K) tensor of probability vectors (non-negative, rows sum to 1)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise DTypeError(expected(f"{name} as a floating tensor", getattr(x, "dtype", type(x).__name__),
                                  "pass probabilities, e.g. one_hot(tokens, K)"))
    if x.dim() != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ShapeError(expected(f"{name} of shape (B, L, K) with B, L >= 1", tuple(x.shape),
                                  "add the batch / length dimensions"))
    if not torch.isfinite(x).all() or (x < -atol).any() or ((x.sum(-1) - 1).abs() > atol).any():
        raise SequenceError(expected(f"{name} on the probability simplex (finite, >= 0, rows summing to 1)",
                                     f"min {float(x.min()):.3g}, row sums in [{float(x.sum(-1).min()):.4g}, "
                                     f"{float(x.sum(-1).max()):.4g}]", "normalise with softmax or x / x.sum(-1)"))
    return x
