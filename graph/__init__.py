"""The Ray Serve application: deployments, the OpenAI ingress, the pipeline, the CLI.

Composes every lower package; none of them imports this one.
"""
