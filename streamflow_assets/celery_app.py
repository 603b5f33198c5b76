"""The cluster profile's celery app: `celery -A streamflow_assets.celery_app worker`.

dagster-celery's tasks on an app configured from the settings as the runs' executor is
(`streamflow_assets.cluster.executor_config`), the way dagster-celery documents a customized app
(a module that makes the app and its tasks, run by celery's own command). A worker is then
celery's main process and its pool, without `dagster-celery worker start`, which writes the same
config to a module of its own and then waits on celery as one more idle process (116 MB measured).
"""

from celery import Celery
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

from streamflow.settings import Settings, get_settings
from streamflow_assets.cluster import executor_config


def build_app(settings: Settings) -> Celery:
    """What `dagster_celery.app` builds (its queue, routes and three tasks), with the config
    the run that queues the steps uses."""
    config = executor_config(settings)
    app = make_app(
        {
            "broker": config["broker"],
            "backend": config["backend"],
            "config_source": config["config_source"],
        }
    )
    create_task(app)
    create_execute_job_task(app)
    create_resume_job_task(app)
    return app


app = build_app(get_settings())
