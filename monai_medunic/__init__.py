"""monai-medunic: medical vision-language pre-training (Med-UniC, UniMedI, Uni-Mlip) for MONAI.

Submodules are imported lazily by their users; importing the top-level package stays cheap and
never imports optional integrations (MONAI Deploy SDK, MONAI Label).
"""

from monai_medunic.errors import install_excepthook as _install_excepthook

__version__ = "0.1.0"

_install_excepthook()


def _raise_stack_soft_limit(wanted: int = 32 * 1024 * 1024) -> None:
    """Raise this process's soft stack limit to 32 MiB (within the hard limit), as Holoscan recommends.

    With the MONAI Deploy SDK installed, ``import monai`` imports Holoscan, which warns on every import
    when the soft limit is below 32 MiB, so every command printed a Deploy warning, even those that never
    run an app. Raising the soft limit needs no privilege and is what ``ulimit -s 32768`` does for a shell.
    """
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_STACK, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))
    except (ImportError, ValueError, OSError):  # not POSIX, or a hard limit we may not exceed: Holoscan warns as before
        pass


_raise_stack_soft_limit()

__all__ = ["__version__"]
