"""Offline stand-in for get-pip.py, used by ansible-test when it builds its virtual environments.

ansible-test runs it as a script with pip-install arguments. Bootstrap pip from the
standard library, then install what was asked for from the configured package index.
"""

import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
# ensurepip points PIP_CONFIG_FILE at /dev/null, which would hide the host's pip settings
# (its index and certificates) from the install below.
for name in ("PIP_CONFIG_FILE", "ENSUREPIP_OPTIONS"):
    os.environ.pop(name, None)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
if args:
    subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)
