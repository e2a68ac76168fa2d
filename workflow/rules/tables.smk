# The papers' tables: results/{table}.csv (long format) and results/{table}.md (wide, for people).
# One rule serves every table of the config (table1 ... table5, mmref/table1 ...); its kind
# (tables.<name>.kind) picks the layout.


rule table:
    input:
        table_inputs,
    output:
        csv=paths.TABLE_CSV,
        md=paths.TABLE_MD,
    params:
        table=table_params,
    log:
        "logs/tables/{table}.log",
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/build_table.py"
