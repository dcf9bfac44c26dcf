"""A PyTorch DistributedDataParallel training: an MLP on scikit-learn's digits.

:class:`DigitsMLP` is the shape of real distributed training code: it calls
``torch.distributed.init_process_group()`` with no arguments (trainerkit gives
every rank the torchrun environment), shards the training rows by rank, wraps
the model in ``DistributedDataParallel`` (gradients are averaged across ranks
at every step) and returns the trained model from every rank; rank 0's is the
training's model. With one process it trains the same way without
``torch.distributed``.

    trainer.train(DigitsMLP, epochs=30, save_path="models", save_with_id=True,
                  resources=trainerkit.Resources(procs_per_node=2))

Needs the ``torch`` extra (``pip install -e '.[torch]'`` in a checkout: torch
and scikit-learn); trainerkit itself never imports either. The data is
scikit-learn's bundled copy of the UCI optical digits test set (1,797 8x8
images of the digits 0-9), so nothing is downloaded. The 80/20 split and the
initial weights depend only on ``seed``. On CPU the ranks meet over gloo; when
each rank sees a GPU (``gpus_per_proc=1``), over NCCL, with the model on it.

The saved model holds its weights as plain lists of floats (pickled by
:class:`trainerkit.ModuleBase`), so loading it needs torch only to predict.
"""

from __future__ import annotations

from typing import Any, Sequence

import trainerkit

#: Share of the rows held out for testing.
TEST_FRACTION = 0.2
_INPUTS, _CLASSES = 64, 10


def _network(hidden: int) -> Any:
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(_INPUTS, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, _CLASSES)
    )


class DigitsMLP(trainerkit.ModuleBase):
    """A one-hidden-layer perceptron that reads 8x8 digit images (64 values, 0-16).

    Attributes:
        hidden: units of the hidden layer.
        weights: the network's parameters by name, as nested lists of floats.
        test_accuracy: share of the held-out rows it classifies right.
        world_size: processes it was trained with.
    """

    def __init__(self, hidden: int, weights: dict[str, Any], test_accuracy: float, world_size: int) -> None:
        self.hidden = hidden
        self.weights = weights
        self.test_accuracy = test_accuracy
        self.world_size = world_size

    @classmethod
    def train(
        cls,
        epochs: int = 30,
        hidden: int = 64,
        learning_rate: float = 0.05,
        batch_size: int = 32,
        seed: int = 0,
    ) -> "DigitsMLP":
        """Train with every rank of the training (or alone); report loss and
        test accuracy after each epoch (rank 0's reports are the training's)."""
        import torch
        import torch.distributed as dist
        from sklearn.datasets import load_digits

        env = trainerkit.distributed_env()
        world_size, rank = (env.world_size, env.rank) if env else (1, 0)
        device = torch.device("cpu")
        if env is not None:
            use_cuda = torch.cuda.is_available()
            if use_cuda:
                device = torch.device("cuda", 0)  # each rank sees only its own devices
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if use_cuda else "gloo")
        try:
            digits = load_digits()
            features = torch.tensor(digits.data, dtype=torch.float32) / 16.0
            labels = torch.tensor(digits.target, dtype=torch.long)
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
            test_count = int(len(labels) * TEST_FRACTION)
            test, train_rows = order[:test_count], order[test_count:]
            mine = train_rows[rank::world_size]  # this rank's shard, as DistributedSampler deals it
            torch.manual_seed(seed)  # the same initial weights on every rank
            network = _network(hidden).to(device)
            model = network
            if env is not None:
                model = torch.nn.parallel.DistributedDataParallel(network)
            optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9)
            loss_function = torch.nn.CrossEntropyLoss()
            test_x, test_y = features[test].to(device), labels[test].to(device)
            accuracy = 0.0
            # The same number of steps on every rank (DDP's all-reduces must pair up):
            # the smallest shard's, so a larger one leaves out at most one row an epoch.
            steps = (len(train_rows) // world_size + batch_size - 1) // batch_size
            for epoch in range(1, epochs + 1):
                shuffled = mine[torch.randperm(len(mine), generator=torch.Generator().manual_seed(seed + epoch))]
                total = torch.zeros(2, device=device)
                for step in range(steps):
                    batch = shuffled[step * batch_size : (step + 1) * batch_size]
                    x, y = features[batch].to(device), labels[batch].to(device)
                    optimizer.zero_grad()
                    loss = loss_function(model(x), y)
                    loss.backward()
                    optimizer.step()
                    total += torch.stack([loss.detach() * len(batch), torch.tensor(float(len(batch)), device=device)])
                if env is not None:
                    dist.all_reduce(total)
                with torch.no_grad():
                    accuracy = float((network(test_x).argmax(dim=1) == test_y).float().mean())
                trainerkit.report_progress(epoch, epochs, loss=float(total[0] / total[1]), accuracy=accuracy)
            weights = {name: value.detach().cpu().tolist() for name, value in network.state_dict().items()}
            return cls(hidden, weights, accuracy, world_size)
        finally:
            if env is not None and dist.is_initialized():
                dist.destroy_process_group()

    def predict(self, images: Sequence[Sequence[float]]) -> list[int]:
        """The digit of each image (64 values, 0-16, row by row)."""
        import torch

        network = _network(self.hidden)
        network.load_state_dict({name: torch.tensor(value) for name, value in self.weights.items()})
        with torch.no_grad():
            scores = network(torch.tensor([list(image) for image in images], dtype=torch.float32) / 16.0)
        return [int(index) for index in scores.argmax(dim=1)]

    def __repr__(self) -> str:
        return f"<DigitsMLP hidden={self.hidden} ranks={self.world_size} test_accuracy={self.test_accuracy:.3f}>"

