"""Index in this process (tests/index_script.py) and report its peak memory and time.

    python tests/hostile_index.py HOME ROOT... [index_script options]

Prints index_script's summary line, then one JSON line {"maxrss_mb": ..., "seconds": ...}. Run it
with --in-process so decoding happens here and ru_maxrss covers it.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import index_script

    started = time.monotonic()
    index_script.main(sys.argv[1:])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(json.dumps({"maxrss_mb": peak_kb / 1024, "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main()
