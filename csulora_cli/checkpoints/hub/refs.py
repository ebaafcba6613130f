"""What the user typed for a Hub repo (`org/name[@revision]`), and the endpoint it is resolved against."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from huggingface_hub import constants
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id


@dataclass(frozen=True)
class HubRef:
    """`org/name` or `org/name@revision` as the user typed it."""

    repo_id: str
    revision: str  # branch, tag or 40-hex commit; "main" when none was given

    @property
    def label(self) -> str:
        return f"{self.repo_id}@{self.revision}"


def parse_hub_ref(spec: str) -> HubRef | None:
    """A repo id with an optional `@revision`, or None when `spec` cannot be one (huggingface_hub's rules)."""
    repo_id, at, revision = spec.partition("@")
    if at and not revision:
        return None
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None
    return HubRef(repo_id, revision or constants.DEFAULT_REVISION)


def endpoint_label() -> str:
    """The Hub endpoint for reports and messages, without any credentials a URL might carry."""
    parts = urlsplit(constants.ENDPOINT)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
