"""What every benchmark records beside its figures: the software measured, when, and how busy the machine was."""

import os
import platform
from datetime import UTC, datetime

import django


def machine_facts():
    """Django's and Python's versions, the time, and the load average and CPU count at the end of the run.

    The clients, the server and the database share the machine: other work on
    it shows in the figures (in the p90 and p99 first), so the load is kept
    with them.
    """
    return {
        "django": django.get_version(),
        "python": platform.python_version(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
