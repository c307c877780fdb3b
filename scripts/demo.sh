#!/usr/bin/env bash
# `make demo`: end to end on a CPU. Filled in by the demo issue; for now it says so.
echo "make demo is not implemented yet: see README (Quickstart) for the commands it will run." >&2
exit 1
