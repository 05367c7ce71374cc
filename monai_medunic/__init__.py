"""monai-medunic: medical vision-language pre-training (Med-UniC, UniMedI, Uni-Mlip) for MONAI.

Submodules are imported lazily by their users; importing the top-level package stays cheap and
never imports optional integrations (MONAI Deploy SDK, MONAI Label).
"""

from monai_medunic.errors import install_excepthook as _install_excepthook

__version__ = "0.1.0"

_install_excepthook()

__all__ = ["__version__"]
