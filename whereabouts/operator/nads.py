"""What the node-slice controller reads of a NetworkAttachmentDefinition, and the slicing it asks for.

A NAD's config is read as the plugin reads it: its whereabouts `ipam`, merged with the flat file
the plugin would merge (`whereabouts.core.slices.slice_spec`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from whereabouts.core.slices import SliceSpec, nad_ipam, slice_spec
from whereabouts.files import find_flat_file, read_regular_file

NAD_GROUP, NAD_VERSION, NAD_PLURAL = "k8s.cni.cncf.io", "v1", "network-attachment-definitions"


@dataclass(frozen=True)
class NAD:
    """What the controller reads of a NetworkAttachmentDefinition."""

    namespace: str
    name: str
    uid: str
    created: str
    config: str


def keep_nad(obj: dict[str, Any]) -> NAD:
    """The `keep` of the NAD mirror: a change to anything else of a NAD wakes nothing."""
    meta = obj.get("metadata") or {}
    config = (obj.get("spec") or {}).get("config")
    return NAD(str(meta.get("namespace") or ""), str(meta.get("name") or ""), str(meta.get("uid") or ""),
               str(meta.get("creationTimestamp") or ""), config if isinstance(config, str) else "")


def read_flat(inline: dict[str, Any]) -> dict[str, Any] | None:
    """The flat file the plugin would merge: the NAD's `configuration_path`, else the standard places,
    as the Go controller looks for it. A controller pod usually has none, and needs none."""
    own = inline.get("configuration_path")
    path = find_flat_file(own if isinstance(own, str) else None)
    if path is None:
        return None
    try:
        data = json.loads(read_regular_file(path))
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"flat file {path}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"flat file {path} does not hold a JSON object")
    return data


def nad_slice_spec(nad: NAD) -> SliceSpec | None:
    """The NodeSlicePool `nad` asks for (None: none). Raises ValueError when its config cannot be read."""
    try:
        config = json.loads(nad.config)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"spec.config is not JSON: {e}") from None
    found = nad_ipam(config)
    if found is None:
        return None
    name, inline = found
    return slice_spec(name, inline, read_flat(inline))
