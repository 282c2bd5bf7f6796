rule report_figures:
    input:
        records=get_records(),
        tables=rules.aggregate_tables.output,  # a figure reads the pass's tables, never recomputes them
    output:
        **catalogue_figures(),
    params:
        tables=lambda wc, input: os.path.dirname(input.tables[0]),
        out=lambda wc, output: os.path.dirname(output[0]),
        settings=analysis_args("reference"),
    log:
        "logs/report_figures.log",
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    shell:
        "MPLBACKEND=Agg mtlbench figures {input.records:q} --tables {params.tables:q} --out {params.out:q} "
        "{params.settings} > {log} 2>&1"


# The report's tables as HTML pages (Snakemake's report opens HTML inline; CSV and Markdown items would be
# `data:` downloads that browsers block). front.html, the claims and the leaderboards, is the front page
# (workflow/report/workflow.rst includes it).
rule report_tables:
    input:
        tables=rules.aggregate_tables.output,
        **get_benchmark_pages_input(),
    output:
        front=f"{REPORT}/front.html",
        **catalogue_pages(),
        **get_benchmark_pages(),
    params:
        tables=lambda wc, input: os.path.dirname(input.tables[0]),
        out=lambda wc, output: os.path.dirname(output.front),
        settings=analysis_args("reference", "rope"),
        extra=" ".join(f"{n}={shlex.quote(p)}" for n, p in get_benchmark_pages_input().items()),
    log:
        "logs/report_tables.log",
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    shell:
        "mtlbench report-tables --tables {params.tables:q} --out {params.out:q} {params.settings} "
        "--extra {params.extra} > {log} 2>&1"
