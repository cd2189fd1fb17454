# The Snakemake report, built at the end of every successful run (report.build), or by
# hand with `snakemake --report reports/report.html` (add the same --configfile).
import sys
import tempfile

import yaml

REPORT = f"{REPORTS}/report.html"


report: "../report/workflow.rst"


onsuccess:
    if config["report"]["build"] and not workflow.dryrun and os.path.exists(SUMMARY):
        # the nested run sees exactly this run's config (files and --config overrides merged)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="painters-config-", delete=False) as handle:
            yaml.safe_dump(dict(config), handle)
        try:
            os.makedirs(REPORTS, exist_ok=True)
            shell(
                "{sys.executable} -m snakemake --snakefile {workflow.main_snakefile:q} --configfile {handle.name:q}"
                " --report {REPORT:q} > {RESULTS}/logs/report.log 2>&1"
            )
            print(f"report: {REPORT}")
        except Exception as error:
            print(f"building the report failed ({error}); see {RESULTS}/logs/report.log", file=sys.stderr)
        finally:
            os.unlink(handle.name)
