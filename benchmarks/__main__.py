"""`python -m benchmarks [--quick] …`"""

import sys

from .cli import main

sys.exit(main())
