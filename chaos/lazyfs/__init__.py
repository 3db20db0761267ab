"""LazyFS: a FUSE filesystem that keeps everything not yet made durable in memory and can lose
it on command, for the power-loss nemesis (docs/chaos-lazyfs.md)."""

from chaos.lazyfs.mount import INSTALL_HINT, LazyFS, fuse_unavailable_reason, send

__all__ = ["INSTALL_HINT", "LazyFS", "fuse_unavailable_reason", "send"]
