# Figures (results/figures/, PNG) and the report: training curves per experiment and per table, the
# tables as figures and as HTML, CUSA's Figures 4 and 5, MMRef's refinement gallery and reference
# neighbours, the run's timings. softref.figures.plan decides which a config calls for and what each
# compares; `snakemake --report results/report.html` gathers them (the report: flags below), with a
# caption from workflow/report/ saying what was measured on which data.
from softref.names import SPLITS


rule export_embeddings:
    input:
        unpack(embeddings_inputs),
    output:
        paths.EMBEDDINGS,
    wildcard_constraints:
        split="|".join(SPLITS),
    threads: 2
    log:
        "logs/export_embeddings/{experiment}/seed-{seed}/{dataset}/{split}.log",
    benchmark:
        "benchmarks/export_embeddings/{experiment}/seed-{seed}/{dataset}/{split}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/export_embeddings.py"


rule run_curves:
    input:
        run_curves_inputs,
    output:
        report(
            paths.RUN_CURVES_FIGURE,
            caption="../report/run_curves.rst",
            category=report_paper_of_experiment,
            subcategory="Training curves",
            labels={"figure": "training curves", "experiment": "{experiment}"},
        ),
    params:
        figure=run_curves_params,
    log:
        "logs/figures/runs/{experiment}/curves.log",
    benchmark:
        "benchmarks/run_curves/{experiment}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/run_curves.py"


rule table_figures:
    input:
        unpack(table_figures_inputs),
    output:
        values=report(
            paths.TABLE_VALUES_FIGURE,
            caption="../report/table_values.rst",
            category=report_paper_of_table,
            subcategory=report_table_title,
            labels={"figure": "the numbers per method"},
        ),
        curves=report(
            paths.TABLE_CURVES_FIGURE,
            caption="../report/table_curves.rst",
            category=report_paper_of_table,
            subcategory=report_table_title,
            labels={"figure": "training curves of its experiments"},
        ),
        html=report(
            paths.TABLE_HTML,
            caption="../report/table_html.rst",
            category=report_paper_of_table,
            subcategory=report_table_title,
            labels={"figure": "the table"},
        ),
    params:
        figure=table_figures_params,
    log:
        "logs/figures/{table}/table.log",
    benchmark:
        "benchmarks/table_figures/{table}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/table_figures.py"


rule tsne_figure:
    input:
        unpack(tsne_inputs),
    output:
        report(
            paths.TSNE_FIGURE,
            caption="../report/tsne.rst",
            category=report_paper_of_table,
            subcategory=report_table_title,
            labels={"figure": "Figure 4: t-SNE without and with USA"},
        ),
    params:
        figure=tsne_params,
    log:
        "logs/figures/{table}/tsne.log",
    benchmark:
        "benchmarks/tsne_figure/{table}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/tsne_figure.py"


rule case_study_figure:
    input:
        unpack(case_study_inputs),
    output:
        report(
            paths.CASE_STUDY_FIGURE,
            caption="../report/case_study.rst",
            category=report_paper_of_table,
            subcategory=report_table_title,
            labels={"figure": "Figure 5: case study"},
        ),
    params:
        figure=case_study_params,
    log:
        "logs/figures/{table}/case-study.log",
    benchmark:
        "benchmarks/case_study_figure/{table}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/case_study_figure.py"


rule refinement_figure:
    input:
        unpack(refinement_inputs),
    output:
        report(
            paths.REFINEMENT_FIGURE,
            caption="../report/refinement.rst",
            category=report_paper_of_table,
            subcategory=report_table_title,
            labels={"figure": "top-10 before and after refinement"},
        ),
    params:
        figure=refinement_params,
    threads: 2
    log:
        "logs/figures/{table}/refinement.log",
    benchmark:
        "benchmarks/refinement_figure/{table}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/refinement_figure.py"


rule neighbours_figure:
    input:
        unpack(neighbours_inputs),
    output:
        report(
            paths.NEIGHBOURS_FIGURE,
            caption="../report/neighbours.rst",
            category=report_paper_of_table,
            subcategory=report_table_title,
            labels={"figure": "reference neighbours of identities"},
        ),
    params:
        figure=neighbours_params,
    log:
        "logs/figures/{table}/neighbours.log",
    benchmark:
        "benchmarks/neighbours_figure/{table}.tsv"
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/neighbours_figure.py"


rule timings_figures:
    input:
        timings_inputs,
    output:
        figure=report(
            paths.TIMINGS_FIGURE,
            caption="../report/timings.rst",
            category="Run",
            subcategory="Timings",
            labels={"figure": "wall time per rule"},
        ),
        html=report(
            paths.TIMINGS_HTML,
            caption="../report/timings.rst",
            category="Run",
            subcategory="Timings",
            labels={"figure": "every job's time and memory"},
        ),
    params:
        drawing=config["figures"],
    log:
        "logs/figures/timings.log",
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/timings_figures.py"


rule figures:
    input:
        all_figures,
