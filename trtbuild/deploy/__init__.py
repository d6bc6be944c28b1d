"""After the build: a Triton model repository (`triton`), the HTML build report (`report`,
`svg`), and trtexec command lines with the ONNX files they name (`trtexec`).

May import: every stage below it, trtbuild.orchestrate included; never trtbuild.cli.
"""
