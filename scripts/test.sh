#!/usr/bin/env bash
# The default test suite (fast tests only; `-m slow` opts into the long ones).
exec python -m pytest -x -q -p no:cacheprovider "$@"
