#!/usr/bin/python3
"""nova-compute from python3-nova (Debian's nova-compute package would pull libvirt and QEMU); run with /usr/bin/python3."""
import sys

sys.argv[0] = "/usr/bin/nova-compute"
from nova.cmd.compute import main  # noqa: E402  (nova.cmd monkey-patches eventlet on import)

sys.exit(main())
