"""Network: a VPC with private subnets only (no internet gateway, no NAT), the VPC endpoints
the jobs use so that no traffic needs the internet, flow logs, the security groups EMR
manages (tagged for EMR's v2 service policy), and the path to the corporate and hospital
networks: Direct Connect, Site-to-Site VPN or a transit gateway (settings), routes for the
corporate ranges in every private route table, a Route 53 Resolver outbound endpoint that
forwards the corporate domain to its DNS servers, and the security group rules for what the
jobs reach there (the hospital database over JDBC, the corporate KDCs)."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack, Tags
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as targets
from aws_cdk import aws_route53resolver as resolver
from constructs import Construct

from sensorpipe_estate.common import EMR_MANAGED_TAG, output
from sensorpipe_estate.settings import EstateSettings

# Interface endpoints, by what uses them: Kinesis (both sources), KMS (SSE-KMS everywhere),
# Secrets Manager (warehouse and hospital passwords), STS (runtime roles), CloudWatch Logs and
# metrics (the jobs' metrics, the CloudWatch agent), EMR (the instances' own API calls), Glue
# (the Data Catalog), Redshift Data API (warehouse loads), SNS (clinical notifications).
INTERFACE_SERVICES = {
    "Kinesis": ec2.InterfaceVpcEndpointAwsService.KINESIS_STREAMS,
    "Kms": ec2.InterfaceVpcEndpointAwsService.KMS,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Monitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
    "Emr": ec2.InterfaceVpcEndpointAwsService.EMR,
    "Glue": ec2.InterfaceVpcEndpointAwsService.GLUE,
    "RedshiftData": ec2.InterfaceVpcEndpointAwsService.REDSHIFT_DATA,
    "Sns": ec2.InterfaceVpcEndpointAwsService.SNS,
}


class NetworkStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id_: str,
        settings: EstateSettings,
        ops_key: kms.IKey,
        **kwargs,  # noqa: ANN003
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        net = settings.network
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(net.vpc_cidr),
            availability_zones=net.availability_zones,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=20
                )
            ],
            enable_dns_hostnames=True,
            enable_dns_support=True,
            # No custom resource: nothing here uses the default security group (checkov skip).
            restrict_default_security_group=False,
        )
        flow_logs = logs.LogGroup(
            self,
            "FlowLogs",
            log_group_name=f"/{settings.name}/vpc-flow-logs",
            encryption_key=ops_key,
            retention=logs.RetentionDays.ONE_YEAR,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )
        private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        self.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[private]
        )

        endpoints_sg = ec2.SecurityGroup(
            self,
            "EndpointsSg",
            vpc=self.vpc,
            allow_all_outbound=False,
            description="Interface endpoints: HTTPS from inside the VPC only",
        )
        endpoints_sg.add_ingress_rule(
            ec2.Peer.ipv4(net.vpc_cidr), ec2.Port.tcp(443), "HTTPS from the VPC"
        )
        for name, service in INTERFACE_SERVICES.items():
            self.vpc.add_interface_endpoint(
                name,
                service=service,
                subnets=private,
                security_groups=[endpoints_sg],
                private_dns_enabled=True,
            )
        # The IoT data plane (device shadows): its endpoint has no private DNS of its own, so a
        # private hosted zone points the account's *-ats.iot endpoint name at it (AWS IoT Core
        # Developer Guide, "AWS IoT Core data plane VPC endpoints").
        iot = self.vpc.add_interface_endpoint(
            "IotData",
            service=ec2.InterfaceVpcEndpointService(
                f"com.amazonaws.{settings.region}.iot.data", 443
            ),
            subnets=private,
            security_groups=[endpoints_sg],
            private_dns_enabled=False,
        )
        zone = route53.PrivateHostedZone(
            self, "IotDataZone", vpc=self.vpc, zone_name=f"iot.{settings.region}.amazonaws.com"
        )
        route53.ARecord(
            self,
            "IotDataRecord",
            zone=zone,
            record_name="*",
            target=route53.RecordTarget.from_alias(targets.InterfaceVpcEndpointTarget(iot)),
        )

        # EMR-managed security groups: EMR writes their rules when a cluster starts.
        def emr_group(id_: str, description: str) -> ec2.SecurityGroup:
            group = ec2.SecurityGroup(
                self, id_, vpc=self.vpc, description=description, allow_all_outbound=False
            )
            Tags.of(group).add(*EMR_MANAGED_TAG)
            return group

        self.emr_primary_sg = emr_group("EmrPrimarySg", "EMR-managed: primary node")
        self.emr_core_sg = emr_group("EmrCoreSg", "EMR-managed: core and task nodes")
        self.emr_service_sg = emr_group(
            "EmrServiceAccessSg", "EMR-managed: service access (private subnet)"
        )
        for subnet in self.vpc.isolated_subnets:
            Tags.of(subnet).add(*EMR_MANAGED_TAG)
        Tags.of(self.vpc).add(*EMR_MANAGED_TAG)

        self._on_premises(settings)

        output(self, "VpcId", self.vpc.vpc_id, "the estate's VPC (private subnets only)")
        output(
            self,
            "PrivateSubnetIds",
            ",".join(s.subnet_id for s in self.vpc.isolated_subnets),
            "private subnets (EMR Ec2SubnetIds)",
        )
        output(
            self,
            "EmrSubnetId",
            self.vpc.isolated_subnets[0].subnet_id,
            "the cluster's private subnet (RunJobFlow Ec2SubnetId)",
        )
        output(
            self,
            "HospitalJdbcUrl",
            settings.warehouse.hospital_jdbc_url,
            "the hospital's on-premises database, over Direct Connect/VPN",
        )
        output(
            self,
            "EmrPrimarySecurityGroupId",
            self.emr_primary_sg.security_group_id,
            "EmrManagedMasterSecurityGroup",
        )
        output(
            self,
            "EmrCoreSecurityGroupId",
            self.emr_core_sg.security_group_id,
            "EmrManagedSlaveSecurityGroup",
        )
        output(
            self,
            "EmrServiceAccessSecurityGroupId",
            self.emr_service_sg.security_group_id,
            "ServiceAccessSecurityGroup",
        )
        output(
            self,
            "EmrOnPremisesSecurityGroupId",
            self.emr_on_premises_sg.security_group_id,
            "AdditionalMasterSecurityGroups/AdditionalSlaveSecurityGroups: JDBC and KDC",
        )
        output(
            self,
            "EmrKdcFromCorporateSecurityGroupId",
            self.emr_kdc_sg.security_group_id,
            "AdditionalMasterSecurityGroups: the corporate KDC and clients reach the cluster KDC",
        )

    def _on_premises(self, settings: EstateSettings) -> None:
        onprem = settings.network.on_premises
        subnets = self.vpc.isolated_subnets
        # The gateway the corporate ranges are routed to.
        if onprem.kind == "transit-gateway":
            attachment = ec2.CfnTransitGatewayAttachment(
                self,
                "CorporateTransitGatewayAttachment",
                transit_gateway_id=str(onprem.transit_gateway_id),
                vpc_id=self.vpc.vpc_id,
                subnet_ids=[s.subnet_id for s in subnets],
            )
            target = {"transit_gateway_id": str(onprem.transit_gateway_id)}
        else:
            gateway = ec2.CfnVPNGateway(
                self, "CorporateGateway", type="ipsec.1", amazon_side_asn=onprem.amazon_side_asn
            )
            attachment = ec2.CfnVPCGatewayAttachment(
                self, "CorporateGatewayAttachment", vpc_id=self.vpc.vpc_id,
                vpn_gateway_id=gateway.ref,
            )  # fmt: skip
            target = {"gateway_id": gateway.ref}
            if onprem.kind == "vpn":
                customer = ec2.CfnCustomerGateway(
                    self, "CorporateCustomerGateway", type="ipsec.1",
                    bgp_asn=onprem.customer_gateway_asn,
                    ip_address=str(onprem.customer_gateway_ip),
                )  # fmt: skip
                ec2.CfnVPNConnection(
                    self, "CorporateVpn", type="ipsec.1", customer_gateway_id=customer.ref,
                    vpn_gateway_id=gateway.ref, static_routes_only=False,
                )  # fmt: skip
            output(self, "CorporateVirtualPrivateGatewayId", gateway.ref,
                   "associate with the Direct Connect gateway (docs/estate.md)")  # fmt: skip
        for i, subnet in enumerate(subnets):
            for j, cidr in enumerate(onprem.cidrs):
                route = ec2.CfnRoute(
                    self, f"CorporateRoute{i}x{j}",
                    route_table_id=subnet.route_table.route_table_id,
                    destination_cidr_block=cidr, **target,
                )  # fmt: skip
                route.add_dependency(attachment)

        # DNS: the corporate domain forwarded to the corporate DNS servers.
        dns_sg = ec2.SecurityGroup(
            self, "ResolverSg", vpc=self.vpc, allow_all_outbound=False,
            description="Route 53 Resolver outbound endpoint: DNS to the corporate servers",
        )  # fmt: skip
        for server in onprem.dns_servers:
            for port in (ec2.Port.tcp(53), ec2.Port.udp(53)):
                dns_sg.add_egress_rule(ec2.Peer.ipv4(f"{server}/32"), port, "corporate DNS")
        endpoint = resolver.CfnResolverEndpoint(
            self, "CorporateDnsEndpoint", direction="OUTBOUND",
            ip_addresses=[resolver.CfnResolverEndpoint.IpAddressRequestProperty(
                subnet_id=s.subnet_id) for s in subnets[:2]],
            security_group_ids=[dns_sg.security_group_id],
            name=f"{settings.name}-corporate-dns",
        )  # fmt: skip
        rule = resolver.CfnResolverRule(
            self, "CorporateDnsForwarding", domain_name=onprem.dns_domain, rule_type="FORWARD",
            resolver_endpoint_id=endpoint.attr_resolver_endpoint_id,
            target_ips=[resolver.CfnResolverRule.TargetAddressProperty(ip=ip, port="53")
                        for ip in onprem.dns_servers],
            name=f"{settings.name}-corporate-domain",
        )  # fmt: skip
        resolver.CfnResolverRuleAssociation(
            self, "CorporateDnsForwardingAssociation", resolver_rule_id=rule.attr_resolver_rule_id,
            vpc_id=self.vpc.vpc_id,
        )  # fmt: skip

        # What the jobs reach there, as additional groups of the EMR clusters.
        self.emr_on_premises_sg = ec2.SecurityGroup(
            self, "EmrOnPremisesSg", vpc=self.vpc, allow_all_outbound=False,
            description="EMR nodes to the hospital database (JDBC) and the corporate KDCs",
        )  # fmt: skip
        self.emr_on_premises_sg.add_egress_rule(
            ec2.Peer.ipv4(onprem.hospital_db_cidr), ec2.Port.tcp(onprem.hospital_db_port),
            "the hospital database (ingest_jdbc)",
        )  # fmt: skip
        for port in (ec2.Port.tcp(88), ec2.Port.udp(88)):
            self.emr_on_premises_sg.add_egress_rule(
                ec2.Peer.ipv4(onprem.kdc_cidr), port, "the corporate KDCs (cross-realm trust)"
            )
        self.emr_kdc_sg = ec2.SecurityGroup(
            self, "EmrKdcFromCorporateSg", vpc=self.vpc, allow_all_outbound=False,
            description="the cluster KDC on the primary node, from the corporate network",
        )  # fmt: skip
        for cidr in onprem.cidrs:
            for port in (ec2.Port.tcp(88), ec2.Port.udp(88)):
                self.emr_kdc_sg.add_ingress_rule(
                    ec2.Peer.ipv4(cidr), port, "corporate clients and KDCs (cross-realm trust)"
                )
