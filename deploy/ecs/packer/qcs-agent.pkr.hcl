# Bakes qcs-agent into an ECS-optimized Amazon Linux 2023 AMI:
#   packer init deploy/ecs/packer && packer build -var rpm=build/release/packages/qcs-agent-0.1.0-1.x86_64.rpm deploy/ecs/packer
# The package enables the unit without starting it (nothing runs during the bake, no sensor
# container is baked in); the configuration is written at boot by user data (deploy/ecs/cloud-init.yaml).
packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "rpm" {
  type        = string
  description = "Path of the qcs-agent .rpm built for Amazon Linux 2023 (cpack -G RPM on an AL2023 builder)."
}

variable "instance_type" {
  type    = string
  default = "t3.small"
}

source "amazon-ebs" "ecs" {
  region        = var.region
  instance_type = var.instance_type
  ssh_username  = "ec2-user"
  ami_name      = "ecs-al2023-qcs-agent-{{timestamp}}"
  source_ami_filter {
    owners      = ["amazon"]
    most_recent = true
    filters = {
      name                = "al2023-ami-ecs-hvm-*-x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
  }
  # IMDSv2 only, on the build instance and on instances launched from the AMI.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
  }
  imds_support = "v2.0"
  tags = {
    Name      = "ecs-al2023-qcs-agent"
    qcs-agent = "0.1.0"
  }
}

build {
  sources = ["source.amazon-ebs.ecs"]

  provisioner "file" {
    source      = var.rpm
    destination = "/tmp/qcs-agent.rpm"
  }

  provisioner "shell" {
    inline = [
      "sudo dnf install -y /tmp/qcs-agent.rpm",
      "rm -f /tmp/qcs-agent.rpm",
      # Enabled, not running: it starts on the instances' first boot, after user data wrote its config.
      "systemctl is-enabled qcs-agent.service",
      "! systemctl is-active --quiet qcs-agent.service",
      "sudo /usr/bin/qcs-agent version",
    ]
  }
}
