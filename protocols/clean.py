"""Clean accuracy: top-1 on the dataset's test split."""

from robustbench_lite.bench.evaluate import accuracy
from robustbench_lite.bench.protocol import PROTOCOLS, Column, Measurement, Protocol, RunContext


@PROTOCOLS.register("clean")
class Clean(Protocol):
    """Top-1 accuracy on the clean test split."""

    columns = (Column("clean acc", "accuracy"),)

    def run(self, ctx: RunContext) -> list[Measurement]:
        model = ctx.train()
        test = ctx.dataset.test
        acc = accuracy(model, test.x, test.y, ctx.recipe.eval_batch_size)
        return [Measurement("accuracy", acc, len(test))]
