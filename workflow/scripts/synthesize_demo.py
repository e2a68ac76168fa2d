"""Render the synthetic demo benchmark into resources/demo in the real dataset formats."""
from pathlib import Path

from softref.data.synthetic import synthesize_demo
from softref.workflow import rule_context

with rule_context(snakemake) as cfg:
    d = cfg.demo
    synthesize_demo(
        Path(snakemake.output.oracle).parent,
        seed=d.seed,
        num_identities=d.num_identities,
        images_per_identity=d.images_per_identity,
        captions_per_image=d.captions_per_image,
        image_size=d.image_size,
        person_size=tuple(d.person_size),
        split_fractions=tuple(d.split_fractions),
        sts_pairs=d.sts_pairs,
    )
