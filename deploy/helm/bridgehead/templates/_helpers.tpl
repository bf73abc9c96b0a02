{{/* The chart's name, at most 63 characters (a DNS label). */}}
{{- define "bridgehead.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The objects' name: the release's name, with the chart's name appended unless the release's name
already holds it; fullnameOverride replaces it all.
*/}}
{{- define "bridgehead.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "bridgehead.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels every object carries. */}}
{{- define "bridgehead.labels" -}}
helm.sh/chart: {{ include "bridgehead.chart" . }}
{{ include "bridgehead.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels that select the pods (never changed by an upgrade). */}}
{{- define "bridgehead.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bridgehead.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bridgehead.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The bridgehead.yaml text: `config` as written when it is a string, else the map as YAML. A map's
listen addresses are checked against containerPorts here, so that a port changed on one side only
fails at render time instead of leaving pods that never become ready.
*/}}
{{- define "bridgehead.config" -}}
{{- $config := .Values.config }}
{{- if kindIs "string" $config }}
{{- $config }}
{{- else }}
{{- $server := (get $config "server") | default dict }}
{{- $admin := (get $config "admin") | default dict }}
{{- $listen := (get $server "listen") | default "127.0.0.1:8080" | toString }}
{{- if not (hasSuffix (printf ":%v" .Values.containerPorts.http) $listen) }}
{{- fail (printf "config.server.listen (%s) must use containerPorts.http (%v)" $listen .Values.containerPorts.http) }}
{{- end }}
{{- $adminListen := (get $admin "listen") | default "127.0.0.1:9901" | toString }}
{{- if not (hasSuffix (printf ":%v" .Values.containerPorts.admin) $adminListen) }}
{{- fail (printf "config.admin.listen (%s) must use containerPorts.admin (%v)" $adminListen .Values.containerPorts.admin) }}
{{- end }}
{{- if or (hasPrefix "127." $adminListen) (hasPrefix "localhost:" $adminListen) (hasPrefix "[::1]:" $adminListen) }}
{{- fail (printf "config.admin.listen (%s) is loopback: the kubelet's probes cannot reach it (listen on 0.0.0.0 and set admin.token)" $adminListen) }}
{{- end }}
{{- toYaml $config }}
{{- end }}
{{- end }}

{{/* The Secret holding the admin token the ServiceMonitor scrapes with ("" for none). */}}
{{- define "bridgehead.tokenSecretName" -}}
{{- .Values.serviceMonitor.tokenSecret.name | default .Values.existingSecret }}
{{- end }}
