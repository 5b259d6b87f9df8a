{{/*
Names, labels and the bits of the sidecar's configuration that several templates share.
*/}}

{{- define "sidestream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; object names add a suffix to it (kept to 63 characters). */}}
{{- define "sidestream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<suffix>": call with (list $ "suffix"). */}}
{{- define "sidestream.component" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "sidestream.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sidestream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object: call with (list $ "component"). */}}
{{- define "sidestream.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "sidestream.chart" $root }}
{{ include "sidestream.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: sidestream
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the pods of one component: call with (list $ "component"). */}}
{{- define "sidestream.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "sidestream.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "sidestream.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "sidestream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sidestream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The headless Service of the sidecars: its DNS name is every sidecar's seed. */}}
{{- define "sidestream.peersServiceName" -}}
{{- include "sidestream.component" (list . "peers") }}
{{- end }}

{{/* The DNS names of the peers' Service, shortest first (all go into the certificates). */}}
{{- define "sidestream.peerDnsNames" -}}
{{- $svc := include "sidestream.peersServiceName" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) | toJson }}
{{- end }}

{{/* "host:port" for an address that may be IPv6: call with (list $ "host" port). */}}
{{- define "sidestream.hostPort" -}}
{{- $root := index . 0 }}
{{- if eq $root.Values.ipFamily "IPv6" }}
{{- printf "[%s]:%d" (index . 1) (int (index . 2)) }}
{{- else }}
{{- printf "%s:%d" (index . 1) (int (index . 2)) }}
{{- end }}
{{- end }}

{{/* The wildcard address of the family. */}}
{{- define "sidestream.anyAddress" -}}
{{- if eq .Values.ipFamily "IPv6" }}::{{ else }}0.0.0.0{{ end }}
{{- end }}

{{/* The Secret of the CA the chart makes (generated, certManager without an issuer). */}}
{{- define "sidestream.caSecretName" -}}
{{- include "sidestream.component" (list . "ca") }}
{{- end }}

{{/* The Secret of the sidecars' certificate (ca.crt, tls.crt, tls.key). */}}
{{- define "sidestream.sidecarSecretName" -}}
{{- if eq .Values.tls.source "existingSecret" }}
{{- .Values.tls.existingSecret }}
{{- else }}
{{- include "sidestream.component" (list . "sidecar-tls") }}
{{- end }}
{{- end }}

{{/* The Secret of a client identity's certificate: call with (list $ "identity"). */}}
{{- define "sidestream.clientSecretName" -}}
{{- include "sidestream.component" (list (index . 0) (printf "client-%s" (index . 1))) }}
{{- end }}

{{/*
The client identities whose certificates the chart issues (generated and certManager): those
of tls.clients, and the example services' when they run without a Secret of their own.
*/}}
{{- define "sidestream.clientIdentities" -}}
{{- $ids := list }}
{{- range .Values.tls.clients }}
{{- $ids = append $ids . }}
{{- end }}
{{- if .Values.examples.enabled }}
{{- if not .Values.examples.orderService.tlsSecret }}
{{- $ids = append $ids "order-service" }}
{{- end }}
{{- if not .Values.examples.paymentService.tlsSecret }}
{{- $ids = append $ids "payment-service" }}
{{- end }}
{{- end }}
{{- $ids | uniq | toJson }}
{{- end }}

{{/* The common name of the sidecars' certificate: a sidecar takes a peer for one when its certificate, of the same CA, names the same. */}}
{{- define "sidestream.sidecarCommonName" -}}
Sidestream sidecar
{{- end }}

{{/* Checks of values that go together, which the schema cannot express. */}}
{{- define "sidestream.validate" -}}
{{- $v := .Values }}
{{- $grace := int64 $v.terminationGracePeriodSeconds }}
{{- $shutdown := int64 $v.config.shutdownGraceMs }}
{{- if lt (mul $grace 1000) (add $shutdown 20000) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed config.shutdownGraceMs (%d ms) by 20 s or more: the sidecar hands its partitions' leadership away (up to 5 s), drains for shutdownGraceMs, closes its connections (up to 2 s), sends its last spans (up to 5 s) and keeps its admin port up to 5 s more" $grace $shutdown) }}
{{- end }}
{{- $floor := add (int64 $v.config.topics.maxBatchBytes) 65536 }}
{{- if lt (int64 $v.config.maxFrameBytes) $floor }}
{{- fail (printf "config.maxFrameBytes (%d) must be at least config.topics.maxBatchBytes + 65536 (%d)" (int64 $v.config.maxFrameBytes) $floor) }}
{{- end }}
{{- if and $v.hostNetwork (or (ne (int $v.hostPorts.client) (int $v.ports.client)) (ne (int $v.hostPorts.peer) (int $v.ports.peer))) }}
{{- fail "hostNetwork: true opens the container's ports on the node itself: hostPorts.client and hostPorts.peer must equal ports.client and ports.peer" }}
{{- end }}
{{- if eq $v.tls.source "existingSecret" }}
{{- if not $v.tls.existingSecret }}
{{- fail "tls.source existingSecret needs tls.existingSecret: the name of a Secret with ca.crt, tls.crt and tls.key (the sidecars' certificate)" }}
{{- end }}
{{- if and $v.examples.enabled (or (not $v.examples.orderService.tlsSecret) (not $v.examples.paymentService.tlsSecret)) }}
{{- fail "tls.source existingSecret with examples.enabled needs examples.orderService.tlsSecret and examples.paymentService.tlsSecret: Secrets with ca.crt, tls.crt and tls.key of a client certificate each" }}
{{- end }}
{{- if $v.tls.clients }}
{{- fail "tls.clients issues client certificates with tls.source generated or certManager only; with existingSecret, make the Secrets yourself" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether cert-manager's objects are made: tls.source certManager on a cluster that serves its API. */}}
{{- define "sidestream.certManagerServed" -}}
{{- if and (eq .Values.tls.source "certManager") (.Capabilities.APIVersions.Has "cert-manager.io/v1") }}true{{ end }}
{{- end }}

{{/* Whether the node-local Service is made: asked for, on Kubernetes 1.22 or later (internalTrafficPolicy). */}}
{{- define "sidestream.localServiceServed" -}}
{{- if and .Values.localService.enabled (semverCompare ">=1.22.0-0" .Capabilities.KubeVersion.Version) }}true{{ end }}
{{- end }}

{{/* A resources block from the flat values: requests, and limits that are not empty. */}}
{{- define "sidestream.resources" -}}
requests:
  {{- range $k, $val := .requests }}
  {{- if $val }}
  {{ $k }}: {{ $val | quote }}
  {{- end }}
  {{- end }}
{{- $limits := dict }}
{{- range $k, $val := .limits }}
{{- if $val }}
{{- $_ := set $limits $k $val }}
{{- end }}
{{- end }}
{{- if $limits }}
limits:
  {{- range $k, $val := $limits }}
  {{ $k }}: {{ $val | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "sidestream.podSecurityContext" -}}
runAsNonRoot: {{ .Values.podSecurityContext.runAsNonRoot }}
runAsUser: {{ int64 .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ int64 .Values.podSecurityContext.runAsGroup }}
fsGroup: {{ int64 .Values.podSecurityContext.fsGroup }}
seccompProfile:
  type: {{ .Values.podSecurityContext.seccompProfileType }}
{{- end }}

{{- define "sidestream.containerSecurityContext" -}}
readOnlyRootFilesystem: {{ .Values.securityContext.readOnlyRootFilesystem }}
allowPrivilegeEscalation: {{ .Values.securityContext.allowPrivilegeEscalation }}
capabilities:
  drop: {{ toJson .Values.securityContext.dropCapabilities }}
{{- end }}
