# The papers' tables: results/{table}.csv (long format) and results/{table}.md (wide, for people).


rule table1:
    input:
        table_inputs,
    output:
        csv="results/{table}.csv",
        md="results/{table}.md",
    wildcard_constraints:
        table="table1",
    log:
        "logs/tables/{table}.log",
    conda:
        "../../envs/softref.yaml"
    script:
        "../scripts/build_table.py"
