"""Where a model's (or an adapter's) files come from, as a report records it, and a small text file read from
them: plain data, importing neither torch nor any I/O."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOCAL = "local"
HUB = "hub"


@dataclass(frozen=True)
class SourceDescription:
    """A local folder (`path`) or one commit of a Hub repo (`repo`, `revision` as typed, `commit` it resolved
    to, `endpoint` it was resolved against)."""

    kind: str  # LOCAL or HUB
    path: str | None = None  # LOCAL: the folder, resolved
    repo: str | None = None  # HUB: the repo id
    revision: str | None = None
    commit: str | None = None
    endpoint: str | None = None  # without any credentials the URL might carry

    @classmethod
    def local(cls, folder: Path) -> SourceDescription:
        return cls(LOCAL, path=str(folder.resolve()))

    @classmethod
    def hub(cls, repo: str, revision: str, commit: str, endpoint: str) -> SourceDescription:
        return cls(HUB, repo=repo, revision=revision, commit=commit, endpoint=endpoint)

    @property
    def label(self) -> str:
        """How messages, reports and cards name it: `org/name` for a Hub repo, else the folder."""
        return str(self.repo if self.kind == HUB else self.path)

    def to_dict(self) -> dict:
        """The report's record, its keys in this order (reports are compared byte for byte)."""
        if self.kind == HUB:
            return {
                "kind": HUB,
                "repo": self.repo,
                "revision": self.revision,
                "commit": self.commit,
                "endpoint": self.endpoint,
            }
        return {"kind": LOCAL, "path": self.path}

    @classmethod
    def from_record(cls, record: object) -> SourceDescription | None:
        """A description a file recorded (a subspace folder's manifest), read back; None when it is not one."""
        if not isinstance(record, dict):
            return None
        kind = record.get("kind")
        fields = {name: record.get(name) for name in ("path", "repo", "revision", "commit", "endpoint")}
        if not all(value is None or isinstance(value, str) for value in fields.values()):
            return None
        if kind == LOCAL and fields["path"]:
            return cls(LOCAL, path=fields["path"])
        if kind == HUB and fields["repo"]:
            return cls(HUB, **{name: value for name, value in fields.items() if name != "path"})
        return None


@dataclass(frozen=True)
class TextFile:
    """A small text file of a model (its card, its config) and how messages name it."""

    where: str  # a local path, or `org/name@commit/file`
    text: str
