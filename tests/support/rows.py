"""What every test case built on a row of the op table shares."""


class OpRow:
    """Mixin for a case holding a row of ``nbsparse._optable.OPS`` as ``op``: named after it."""

    def __str__(self):
        return self.op.name

    @property
    def name(self):
        return self.op.name

    @property
    def func(self):
        return self.op.func
