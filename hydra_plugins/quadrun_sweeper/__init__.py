"""quadrun's sweeper as a Hydra plugin (Hydra instantiates sweepers only from
`hydra_plugins`): Hydra's basic sweeper, launching only the jobs that are not finished, with
`hydra.sweeper.grids` (more grids whose jobs are added: quadrun.sweeps.grid_jobs).

quadrun.schema.register() calls Plugins.instance() first (Hydra's plugin scan re-imports
its core plugin modules) and then registers this class by hand, since an editable install
hides this namespace package from Hydra's scan.
"""
import logging
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from quadrun import sweeps

log = logging.getLogger("quadrun")


class QuadrunSweeper(BasicSweeper):
    """Hydra's basic sweeper (lists, ranges, `hydra.sweeper.params`), launching only the
    jobs that are not finished already (see the module docstring)."""

    def __init__(self, max_batch_size=None, params=None, grids=None):
        super().__init__(max_batch_size, params)
        self.grids = grids   # hydra.sweeper.grids: more grids, their jobs added (sweeps.grid_jobs)

    def sweep(self, arguments: list):
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        import os

        os.environ[sweeps.PARENT] = str(os.getpid())   # local jobs die with this process
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        grids = OmegaConf.to_container(self.grids) if OmegaConf.is_config(self.grids) else self.grids
        jobs = sweeps.grid_jobs(self.params or {}, grids, arguments, parser)
        size = self.max_batch_size or len(jobs) or 1
        self.overrides = [jobs[i:i + size] for i in range(0, len(jobs), size)]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / sweeps.MULTIRUN)
        batches, skipped, total = [], 0, 0
        while not self.is_done():
            batch = self.get_job_batch()
            todo = []
            for job in batch:
                why = sweeps.finished(self.config, sweep_dir / sweeps.job_name(job))
                if why is None:
                    todo.append(job)
                else:
                    sweeps.journal(sweep_dir, sweep_dir / sweeps.job_name(job), "skipped", why)
            skipped, total = skipped + len(batch) - len(todo), total + len(batch)
            if todo:
                batches.append(todo)
        launched = sum(len(b) for b in batches)
        os.environ[sweeps.TOTAL] = str(launched)
        import sys

        print(f"sweep {sweep_dir}: {sweeps.plan_line(self.config, launched, total)}",
              file=sys.stderr, flush=True)
        in_process = type(self.launcher).__name__ == "BasicLauncher"
        returns, index = [], 0
        for todo in batches:
            self.validate_batch_is_legal(todo)
            results = self.launcher.launch(todo, initial_job_idx=index)
            for i, r in enumerate(results):
                value = r.return_value  # a job that raised raises here, as in Hydra's sweeper
                if not in_process:    # one line per job, as the in-process jobs print theirs
                    job = sweep_dir / sweeps.job_name(todo[i])
                    summary = value if isinstance(value, dict) else sweeps._read_json(job / "summary.json")
                    print(sweeps.job_line(job, summary, index + i + 1, launched), file=sys.stderr,
                          flush=True)
            index += len(todo)
            returns.append(results)
        return returns
