"""The demo: synthetic street scenes, the pipeline run on them, and its report.

Owns the scene generator and the dataset writer (`synth`), the demo runner
(`runner`: the csst commands of the whole pipeline, in order) and the HTML/PNG
report (`report`). It may import csst_data and csst_train; neither library
imports it, and neither runs the CLI.
"""
