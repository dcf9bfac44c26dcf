"""``type: KUBERNETES``: one batch/v1 Job per training (see ``docs/kubernetes.md``).

Modules: :mod:`.config` (the config keys), :mod:`.validation` (API server
rules checked before sending), :mod:`.manifest` (config + request -> Job and
ConfigMap, pure), :mod:`.status` (Job + pods -> TrainingInfo, pure),
:mod:`.api` (every call to the API server, and its errors; the answers
callers act upon are in :mod:`.api_errors`), :mod:`.watch`
(the shared watches), :mod:`.store` (records are the Jobs), :mod:`.trainer`
(KubernetesModelTrainer), :mod:`.pod_entry` (what runs inside the pod) and
:mod:`.kube_shape` (Kubernetes-shaped config checked against the client's models).

Importing this package does not import the ``kubernetes`` client: the trainer
imports it when it is built, so loading a configuration stays light and the
pod entry point runs in images without it.
"""

from .config import KubernetesTrainerConfig, ResourcesConfig
from .trainer import KubernetesModelTrainer

__all__ = ["KubernetesModelTrainer", "KubernetesTrainerConfig", "ResourcesConfig"]
