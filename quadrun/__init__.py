"""quadrun: a command-line experiment runner for quadratic neural networks and scientific ML."""
__version__ = "0.1.0"


def _register_resolvers() -> None:
    import secrets

    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("quadrun_id"):
        # a random id per process, cached: two runs started in the same second differ
        OmegaConf.register_new_resolver("quadrun_id", lambda: secrets.token_hex(3),
                                        use_cache=True)
    if not OmegaConf.has_resolver("quadrun_job"):
        # a sweep job's folder, named by its overrides (quadrun.sweeps.job_name)
        def job(task) -> str:
            from quadrun.sweeps import job_name

            return job_name(list(task))

        OmegaConf.register_new_resolver("quadrun_job", job)


_register_resolvers()
