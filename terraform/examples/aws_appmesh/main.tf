# The same complete mesh as ../meshplane, for teams that keep the AWS provider: its
# aws_appmesh_* resources work against Meshplane's App Mesh-compatible API with an
# endpoint override.
#
# DOCUMENTATION ONLY. This example is not run by Meshplane's tests: the hashicorp/aws
# provider cannot be downloaded on the machines those tests run on (no access to the
# Terraform registry), so it has never been applied there. The meshplane_* version in
# ../meshplane is the same mesh and is applied by the test suite.
#
#   export AWS_ACCESS_KEY_ID=<Meshplane access key id> AWS_SECRET_ACCESS_KEY=<secret>
#   terraform init && terraform apply -var endpoint=https://meshplane.example.com

terraform {
  required_providers {
    aws = {
      source = "hashicorp/aws"
    }
  }
}

variable "endpoint" {
  type        = string
  description = "Meshplane's URL (the App Mesh-compatible API is served at its root)."
}

provider "aws" {
  region = "us-east-1"

  # Only App Mesh calls go to Meshplane; the provider must not try to reach AWS itself
  # (STS, IAM, EC2 metadata) to check the credentials or find the account.
  endpoints {
    appmesh = var.endpoint
  }
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}

variable "mesh_name" {
  type    = string
  default = "shop"
}

locals {
  domain  = "${var.mesh_name}.local"
  ca      = "/etc/meshplane/certs/ca/chain.pem"
  version = { stable = "v1", canary = "v2" }
}

resource "aws_appmesh_mesh" "shop" {
  name = var.mesh_name

  spec {
    egress_filter {
      type = "DROP_ALL"
    }
    service_discovery {
      ip_preference = "IPv4_PREFERRED"
    }
  }

  tags = {
    team = "platform"
  }
}

# ---- catalog: two versions behind a router, 10% of traffic to the canary -----------------

resource "aws_appmesh_virtual_node" "catalog" {
  for_each  = local.version
  name      = "catalog-${each.value}"
  mesh_name = aws_appmesh_mesh.shop.name

  spec {
    listener {
      port_mapping {
        port     = 8080
        protocol = "http"
      }

      health_check {
        protocol            = "http"
        path                = "/healthz"
        port                = 8080
        healthy_threshold   = 2
        unhealthy_threshold = 3
        timeout_millis      = 2000
        interval_millis     = 5000
      }

      tls {
        mode = "STRICT"
        certificate {
          file {
            certificate_chain = "/etc/meshplane/certs/catalog/chain.pem"
            private_key       = "/etc/meshplane/certs/catalog/key.pem"
          }
        }
        validation {
          trust {
            file {
              certificate_chain = local.ca
            }
          }
          subject_alternative_names {
            match {
              exact = ["orders.${local.domain}", "gateway.${local.domain}"]
            }
          }
        }
      }

      outlier_detection {
        max_server_errors    = 5
        max_ejection_percent = 50
        interval {
          unit  = "s"
          value = 10
        }
        base_ejection_duration {
          unit  = "s"
          value = 30
        }
      }
    }

    service_discovery {
      dns {
        hostname = "catalog-${each.value}.${local.domain}"
      }
    }

    logging {
      access_log {
        file {
          path = "/dev/stdout"
        }
      }
    }
  }
}

resource "aws_appmesh_virtual_router" "catalog" {
  name      = "catalog"
  mesh_name = aws_appmesh_mesh.shop.name

  spec {
    listener {
      port_mapping {
        port     = 8080
        protocol = "http"
      }
    }
  }
}

resource "aws_appmesh_route" "catalog" {
  name                = "catalog"
  mesh_name           = aws_appmesh_mesh.shop.name
  virtual_router_name = aws_appmesh_virtual_router.catalog.name

  spec {
    http_route {
      match {
        prefix = "/"
      }

      action {
        weighted_target {
          virtual_node = aws_appmesh_virtual_node.catalog["stable"].name
          weight       = 90
        }
        weighted_target {
          virtual_node = aws_appmesh_virtual_node.catalog["canary"].name
          weight       = 10
        }
      }

      retry_policy {
        http_retry_events = ["gateway-error", "server-error"]
        tcp_retry_events  = ["connection-error"]
        max_retries       = 2
        per_retry_timeout {
          unit  = "ms"
          value = 2000
        }
      }

      timeout {
        per_request {
          unit  = "s"
          value = 15
        }
      }
    }
  }
}

resource "aws_appmesh_virtual_service" "catalog" {
  name      = "catalog.${local.domain}"
  mesh_name = aws_appmesh_mesh.shop.name

  spec {
    provider {
      virtual_router {
        virtual_router_name = aws_appmesh_virtual_router.catalog.name
      }
    }
  }
}

# ---- orders: calls catalog over TLS ------------------------------------------------------

resource "aws_appmesh_virtual_node" "orders" {
  name      = "orders"
  mesh_name = aws_appmesh_mesh.shop.name

  spec {
    listener {
      port_mapping {
        port     = 8080
        protocol = "http"
      }

      health_check {
        protocol            = "http"
        path                = "/ready"
        port                = 8080
        healthy_threshold   = 2
        unhealthy_threshold = 2
        timeout_millis      = 2000
        interval_millis     = 10000
      }

      tls {
        mode = "STRICT"
        certificate {
          sds {
            secret_name = "orders"
          }
        }
      }

      timeout {
        http {
          idle {
            unit  = "s"
            value = 300
          }
        }
      }
    }

    backend {
      virtual_service {
        virtual_service_name = aws_appmesh_virtual_service.catalog.name
        client_policy {
          tls {
            enforce = true
            ports   = [8080]
            validation {
              trust {
                file {
                  certificate_chain = local.ca
                }
              }
            }
          }
        }
      }
    }

    service_discovery {
      dns {
        hostname = "orders.${local.domain}"
      }
    }
  }
}

resource "aws_appmesh_virtual_service" "orders" {
  name      = "orders.${local.domain}"
  mesh_name = aws_appmesh_mesh.shop.name

  spec {
    provider {
      virtual_node {
        virtual_node_name = aws_appmesh_virtual_node.orders.name
      }
    }
  }
}

# ---- ingress: a gateway sending /orders and /catalog into the mesh ----------------------

resource "aws_appmesh_virtual_gateway" "ingress" {
  name      = "ingress"
  mesh_name = aws_appmesh_mesh.shop.name

  spec {
    listener {
      port_mapping {
        port     = 8443
        protocol = "http"
      }

      health_check {
        protocol            = "http"
        path                = "/ping"
        port                = 8443
        healthy_threshold   = 2
        unhealthy_threshold = 2
        timeout_millis      = 2000
        interval_millis     = 5000
      }

      tls {
        mode = "STRICT"
        certificate {
          file {
            certificate_chain = "/etc/meshplane/certs/gateway/chain.pem"
            private_key       = "/etc/meshplane/certs/gateway/key.pem"
          }
        }
      }
    }

    backend_defaults {
      client_policy {
        tls {
          enforce = true
          validation {
            trust {
              file {
                certificate_chain = local.ca
              }
            }
          }
        }
      }
    }
  }
}

resource "aws_appmesh_gateway_route" "orders" {
  name                 = "orders"
  mesh_name            = aws_appmesh_mesh.shop.name
  virtual_gateway_name = aws_appmesh_virtual_gateway.ingress.name

  spec {
    http_route {
      match {
        prefix = "/orders/"
      }
      action {
        target {
          virtual_service {
            virtual_service_name = aws_appmesh_virtual_service.orders.name
          }
        }
      }
    }
  }
}

resource "aws_appmesh_gateway_route" "catalog" {
  name                 = "catalog"
  mesh_name            = aws_appmesh_mesh.shop.name
  virtual_gateway_name = aws_appmesh_virtual_gateway.ingress.name

  spec {
    priority = 10
    http_route {
      match {
        prefix = "/catalog/"
      }
      action {
        target {
          virtual_service {
            virtual_service_name = aws_appmesh_virtual_service.catalog.name
          }
        }
        rewrite {
          prefix {
            default_prefix = "ENABLED"
          }
        }
      }
    }
  }
}

# ---- reading back: data sources ------------------------------------------------------------

data "aws_appmesh_route" "catalog" {
  name                = aws_appmesh_route.catalog.name
  mesh_name           = aws_appmesh_mesh.shop.name
  virtual_router_name = aws_appmesh_virtual_router.catalog.name
}

output "catalog_canary_weight" {
  value = [
    for t in data.aws_appmesh_route.catalog.spec[0].http_route[0].action[0].weighted_target :
    t.weight if t.virtual_node == "catalog-${local.version.canary}"
  ][0]
}

output "mesh_arn" {
  value = aws_appmesh_mesh.shop.arn
}
