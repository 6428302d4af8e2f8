"""The session's MLflow server fixture answers a client: a run logged over HTTP reads back the same."""

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow  # starts the session's MLflow server


def test_mlflow_server_fixture(mlflow_server: str) -> None:
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.create_experiment("smoke")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
