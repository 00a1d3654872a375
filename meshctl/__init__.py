"""meshctl: the Meshplane operator CLI (App Mesh import, Terraform export). No Django here:
it talks to the App Mesh-compatible API through boto3, like any other client."""
