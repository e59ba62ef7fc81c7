"""The one error type raised for bad panoptic data: it names the dataset and the file."""


class PanopticDataError(ValueError):
    """A sample or annotation file that cannot be used.

    Attributes ``dataset_name``, ``path`` and ``problem`` are the parts of the message
    ``"dataset '<dataset_name>', file <path>: <problem>"``.
    """

    def __init__(self, dataset_name, path, problem):
        self.dataset_name = dataset_name
        self.path = path
        self.problem = problem
        super().__init__(f"dataset {dataset_name!r}, file {path}: {problem}")
