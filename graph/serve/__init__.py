"""The Ray Serve application: the one builder, the step deployments, the
handles between them, their Serve options, and the ingress where the HTTP app
meets the deployments."""
