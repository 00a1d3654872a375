"""terraform-provider-meshplane: a Terraform provider for Meshplane (plugin protocol 6)."""
