# softref: teacher features -> references -> CUSA / MMRef students -> the papers' tables.
# Entry point only: the rules live in workflow/rules/, the defaults in config.yaml.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/references.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        all_tables,
        all_diagnostics,
        all_figures,
