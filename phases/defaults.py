"""The workflow every fresh installation starts with."""

from pathlib import Path

DEFAULT_WORKFLOW_SLUG = "software_development"
DEFAULT_WORKFLOW_FILE = Path(__file__).resolve().parent / "workflows" / "software_development.yaml"
