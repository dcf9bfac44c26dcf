"""A separate process that submits one SUBPROCESS training, for the detach tests.

    python -m tests.subprocess_submitter CONFIG_JSON MODULE KWARGS_JSON SAVE_PATH {exit|release|block|result}

Builds a TrainerManager from CONFIG_JSON (one trainer named "iso"), trains
MODULE (``package.module:Class``) with KWARGS_JSON, saving under SAVE_PATH,
prints the training id, then: ``exit`` returns (the interpreter's exit does
what the trainer says at exit); ``release`` first calls
``manager.close(wait=False)``; ``block`` sleeps until it is killed; ``result`` waits for the model, then returns. Log
records go to stderr. The state directory comes from $TRAINERKIT_STATE_DIR.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import trainerkit
from trainerkit.module import import_object


def main(argv: list[str]) -> int:
    config, module, kwargs, save_path, mode = argv
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    manager = trainerkit.TrainerManager.from_dict(json.loads(config))
    trainer = manager.get_trainer("iso")
    future = trainer.train(import_object(module), save_path=save_path, save_with_id=True, **json.loads(kwargs))
    print(future.id, flush=True)
    if mode == "release":
        manager.close(wait=False)
    elif mode == "result":
        future.result()
    elif mode == "block":
        time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
