"""torchrun --nproc_per_node=N -m cae_codec.training --out ... (cae-codec train's options)."""

from ..cli import train as command

command()
