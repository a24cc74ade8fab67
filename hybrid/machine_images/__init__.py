"""Machine images: recipes (cloud-init + systemd units), AMI bake, and export of the web-tier image to Glance."""
