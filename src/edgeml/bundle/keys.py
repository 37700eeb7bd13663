"""Ed25519 signing keys and the key rings devices trust.

The publisher keeps its keys in ``$EDGEML_HOME/keys/``: ``<key id>.pem`` private keys
(mode 0600, refused when others can read them) and ``active`` naming the one that signs.
Rotation adds a key and makes it active; older keys stay, so their public halves stay in
the rings devices hold until every bundle signed with them has been replaced.

A key ring is a folder of ``<key id>.pub`` files (PEM). A key id is the first 16 hex
digits of the sha256 of the raw public key, so a renamed file cannot claim another id.

Signatures are detached: a small JSON document ``{"algorithm", "key_id", "signature"}``
over the exact bytes of the signed document, which is written in canonical JSON.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ValidationError

from edgeml.errors import BundleRejected, UserError

__all__ = [
    "KeyInfo",
    "KeyRing",
    "Signer",
    "canonical_json",
    "check_context",
    "export_public",
    "init_keys",
    "key_id",
    "list_keys",
    "load_signer",
    "open_signed",
    "rotate_keys",
    "timestamp",
]

ALGORITHM = "ed25519"
_ACTIVE = "active"


def canonical_json(document: Any) -> bytes:
    """One byte string per document: sorted keys, no spaces, UTF-8, no NaN or infinity."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


SignedT = TypeVar("SignedT", bound=BaseModel)


def open_signed(data: bytes, signature: bytes, ring: KeyRing, model: type[SignedT], what: str) -> SignedT:
    """Check the signature over the exact bytes, then parse; the document must name its signer."""
    kid = ring.verify(data, signature)
    try:
        document = model.model_validate(json.loads(data, parse_constant=_no_constant))
    except (ValueError, ValidationError, RecursionError) as exc:
        raise BundleRejected("malformed", f"the signed {what} does not parse: {_first_error(exc)}") from exc
    named = getattr(document, "key_id", None)
    if named != kid:
        raise BundleRejected("key-mismatch", f"the {what} names key {named} but key {kid} signed it")
    return document


def check_context(what: str, expected: dict[str, tuple[object, object | None, str]]) -> None:
    """Each field of a verified document against what its context says it must be.

    ``expected`` maps a field to ``(value in the document, value wanted or None to skip, who
    wants it)``. A signed document is valid only where it was meant to be used (TUF's
    "wrong software" and "mix-and-match" attacks): another model's pointer copied over this
    one, or an arm64 manifest at the x86 path, carries a good signature and must still fail.
    """
    for name, (got, wanted, source) in expected.items():
        if wanted is not None and got != wanted:
            raise BundleRejected(
                "context-mismatch",
                f"the {what} has {name} {_show(got)}, but {source} says {_show(wanted)} (field {name})",
            )


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON; canonical JSON never holds them."""
    raise ValueError(f"{name} is not a JSON value")


def _first_error(exc: BaseException) -> str:
    """A validation error in one line, naming the field (pydantic lists every error on many lines)."""
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) or "(top)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"field {where}: {errors[0]['msg']}{more}"
    return str(exc) or type(exc).__name__


def timestamp(value: str, what: str) -> datetime:
    """An ISO timestamp from a signed document, as UTC when it carries no zone."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BundleRejected("malformed", f"{what} {value!r} is not an ISO timestamp") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    created: str
    active: bool
    path: Path


@dataclass(frozen=True)
class Signer:
    """The active private key: signs documents. ``known`` holds every public key of its home
    (older ones too), so the publisher can verify what it published before a rotation."""

    key_id: str
    private: Ed25519PrivateKey
    known: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    def ring(self) -> KeyRing:
        """The keys this publisher's own documents may carry."""
        return KeyRing(self.known or {self.key_id: self.private.public_key()})

    def sign(self, data: bytes) -> bytes:
        """The detached signature document for ``data``."""
        signature = base64.b64encode(self.private.sign(data)).decode()
        return canonical_json({"algorithm": ALGORITHM, "key_id": self.key_id, "signature": signature})


class KeyRing:
    """Public keys a device trusts, by key id."""

    def __init__(self, keys: dict[str, Ed25519PublicKey]) -> None:
        self.keys = dict(keys)

    @classmethod
    def from_dir(cls, folder: Path) -> KeyRing:
        if not folder.is_dir():
            raise UserError(
                f"key ring {folder} is not a folder", hint="`edgeml keys export-public --out DIR`"
            )
        keys: dict[str, Ed25519PublicKey] = {}
        for path in sorted(folder.glob("*.pub")):
            try:
                public = serialization.load_pem_public_key(path.read_bytes())
            except (ValueError, UnsupportedAlgorithm, OSError) as exc:
                raise UserError(f"key ring file {path} is not a PEM public key: {exc}") from exc
            if not isinstance(public, Ed25519PublicKey):
                raise UserError(f"{path} is not an Ed25519 public key")
            if key_id(public) != path.stem:
                raise UserError(f"{path} holds key {key_id(public)}, not the {path.stem} its name claims")
            keys[path.stem] = public
        if not keys:
            raise UserError(
                f"key ring {folder} holds no *.pub keys", hint="`edgeml keys export-public --out DIR`"
            )
        return cls(keys)

    @classmethod
    def from_home(cls, home: Path) -> KeyRing:
        """The publisher's own keys, as a ring (for checking what it published)."""
        keys = {}
        for info in list_keys(home):
            private = serialization.load_pem_private_key(info.path.read_bytes(), password=None)
            assert isinstance(private, Ed25519PrivateKey)
            keys[info.key_id] = private.public_key()
        if not keys:
            raise UserError("there are no signing keys in this appliance home", hint="`edgeml keys init`")
        return cls(keys)

    def verify(self, data: bytes, signature_document: bytes) -> str:
        """The key id that signed ``data``; :class:`BundleRejected` unless a trusted key did.

        The signature document is untrusted input: anything but ``{"algorithm": str,
        "key_id": str, "signature": base64 str}`` is a rejection, never an exception of its own.
        """
        doc = _signature_document(signature_document)
        algorithm, kid = doc["algorithm"], doc["key_id"]
        if algorithm != ALGORITHM:
            raise BundleRejected(
                "bad-signature",
                f"signature algorithm {_show(algorithm)} is not {ALGORITHM} (field algorithm)",
            )
        public = self.keys.get(kid)
        if public is None:
            raise BundleRejected(
                "unknown-key",
                f"signed by key {_show(kid)}, which is not in the key ring ({', '.join(sorted(self.keys))})",
                hint="after `edgeml keys rotate`, give devices the new public key",
            )
        try:
            signature = base64.b64decode(doc["signature"], validate=True)
            public.verify(signature, data)
        except (InvalidSignature, ValueError, binascii.Error) as exc:
            raise BundleRejected("bad-signature", f"the signature does not match key {kid}") from exc
        return kid


#: a signature document is ~150 bytes; anything far bigger is not one
MAX_SIGNATURE_BYTES = 4096


def _show(value: object) -> str:
    """An untrusted value for a message: repr, cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _signature_document(raw: bytes) -> dict[str, str]:
    """The parsed detached signature, each field a string; BundleRejected naming the bad field."""
    if len(raw) > MAX_SIGNATURE_BYTES:
        raise BundleRejected(
            "bad-signature", f"the signature document is {len(raw):,} bytes; at most {MAX_SIGNATURE_BYTES:,}"
        )
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BundleRejected("bad-signature", f"the signature document is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BundleRejected(
            "bad-signature", f"the signature document is a JSON {type(doc).__name__}, not an object"
        )
    for name in ("algorithm", "key_id", "signature"):
        if name not in doc:
            raise BundleRejected("bad-signature", f"the signature document has no field {name}")
        if not isinstance(doc[name], str):
            raise BundleRejected(
                "bad-signature",
                f"field {name} of the signature document is {_show(doc[name])}, not a string",
            )
    return doc


def _keys_dir(home: Path) -> Path:
    return home / "keys"


def _write_private(folder: Path) -> KeyInfo:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    private = Ed25519PrivateKey.generate()
    kid = key_id(private.public_key())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = folder / f"{kid}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never world-readable, even briefly
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    tmp = folder / f".{_ACTIVE}.tmp"
    tmp.write_text(kid + "\n")
    os.replace(tmp, folder / _ACTIVE)
    return _info(path, kid)


def _info(path: Path, active: str | None) -> KeyInfo:
    created = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    return KeyInfo(path.stem, created, path.stem == active, path)


def init_keys(home: Path) -> KeyInfo:
    """Create the first signing key; refuse when keys exist (rotating is a separate act)."""
    folder = _keys_dir(home)
    if list(folder.glob("*.pem")):
        raise UserError(f"signing keys already exist in {folder}", hint="`edgeml keys rotate` adds a new one")
    return _write_private(folder)


def rotate_keys(home: Path) -> KeyInfo:
    """Add a new signing key and make it the active one; older keys stay for verification."""
    if not list(_keys_dir(home).glob("*.pem")):
        raise UserError("there is no signing key to rotate", hint="`edgeml keys init`")
    return _write_private(_keys_dir(home))


def _active_id(folder: Path) -> str | None:
    marker = folder / _ACTIVE
    return marker.read_text().strip() if marker.is_file() else None


def list_keys(home: Path) -> list[KeyInfo]:
    """Every signing key, oldest first."""
    folder = _keys_dir(home)
    active = _active_id(folder)
    paths = sorted(folder.glob("*.pem"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    return [_info(p, active) for p in paths]


def load_signer(home: Path) -> Signer:
    """The active private key, refused when anyone but its owner can read it."""
    folder = _keys_dir(home)
    kid = _active_id(folder)
    if kid is None:
        raise UserError(f"no signing key in {folder}", hint="`edgeml keys init`")
    path = folder / f"{kid}.pem"
    if not path.is_file():
        raise UserError(f"the active key {kid} is missing from {folder}", hint="`edgeml keys rotate`")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise UserError(
            f"private key {path} is readable by others (mode {mode:04o}); refusing to use it",
            hint=f"chmod 600 {path}, and consider rotating: it may have leaked",
        )
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey) or key_id(private.public_key()) != kid:
        raise UserError(f"{path} is not the Ed25519 key {kid}")
    return Signer(kid, private, KeyRing.from_home(home).keys)


def export_public(home: Path, out: Path) -> list[Path]:
    """Write every key's public half into the key-ring folder ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for kid, public in KeyRing.from_home(home).keys.items():
        target = out / f"{kid}.pub"
        target.write_bytes(_public_pem(public))
        written.append(target)
    return written
