"""What the command line shows before any model library loads (``hybrid classify --help`` on a machine with only
the core installed): the classifier's runtimes and how many labels it ranks."""

RUNTIMES = ("auto", "onnx", "torch")
TOP_K = 5
