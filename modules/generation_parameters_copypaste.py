"""A1111's legacy name of `modules.infotext_utils` (renamed in A1111 1.8), kept for older extensions.

Importing it gives the very same module object as `modules.infotext_utils`, so the two names share `paste_fields`,
`registered_param_bindings` and every function.
"""

import sys

from modules import infotext_utils

sys.modules[__name__] = infotext_utils
