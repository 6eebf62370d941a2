{{/* Names: <release>-quasar unless overridden, 63 characters at most (DNS label). */}}
{{- define "quasar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "quasar.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's object name: <fullname>-<component>, kept within 63 characters. */}}
{{- define "quasar.componentName" -}}
{{- printf "%s-%s" (include "quasar.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{- define "quasar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "gateway"). */}}
{{- define "quasar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quasar.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "quasar.labels" -}}
helm.sh/chart: {{ include "quasar.chart" .root }}
{{ include "quasar.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: quasar
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "quasar.gatewayImage" -}}
{{- printf "%s:%s" .Values.gateway.image.repository (default .Chart.AppVersion .Values.gateway.image.tag) -}}
{{- end -}}

{{- define "quasar.image" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{- define "quasar.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create -}}
{{- default (include "quasar.componentName" (dict "root" . "component" "gateway")) .Values.gateway.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.gateway.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Pod security context for a non-root user; call with the uid. */}}
{{- define "quasar.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security context; call with (dict "readOnlyRootFilesystem" BOOL). */}}
{{- define "quasar.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .readOnlyRootFilesystem }}
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The world directory inside gateway pods. */}}
{{- define "quasar.worldDir" -}}
{{- .Values.gateway.world.path -}}
{{- end -}}

{{/* `feed_ranker`'s backend: local, triton or tfserving (gateway.ranker.target resolved). */}}
{{- define "quasar.rankerTarget" -}}
{{- $target := .Values.gateway.ranker.target -}}
{{- if eq $target "auto" -}}
{{- if .Values.triton.enabled -}}triton{{- else if .Values.tfserving.enabled -}}tfserving{{- else -}}local{{- end -}}
{{- else -}}
{{- if and (eq $target "triton") (not .Values.triton.enabled) -}}
{{- fail "gateway.ranker.target is triton but triton.enabled is false" -}}
{{- end -}}
{{- if and (eq $target "tfserving") (not .Values.tfserving.enabled) -}}
{{- fail "gateway.ranker.target is tfserving but tfserving.enabled is false" -}}
{{- end -}}
{{- $target -}}
{{- end -}}
{{- end -}}

{{/* The Redis URL the gateway's store uses; empty when redis.mode is none. */}}
{{- define "quasar.redisUrl" -}}
{{- if eq .Values.redis.mode "bundled" -}}
{{- printf "redis://%s:%d/0" (include "quasar.componentName" (dict "root" . "component" "redis")) (int .Values.redis.bundled.port) -}}
{{- else if eq .Values.redis.mode "external" -}}
{{- if .Values.redis.external.existingSecret.name -}}
{{- /* The URL comes from the Secret through QUASAR_STORE__URL, which overrides this placeholder. */ -}}
redis://from-secret.invalid:6379/0
{{- else -}}
{{- required "redis.external.url is required when redis.mode is external (or set redis.external.existingSecret.name)" .Values.redis.external.url -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Engines and routes (engines.config.EnginesConfig) as YAML; empty = the gateway's in-process default. */}}
{{- define "quasar.enginesConfig" -}}
{{- if .Values.gateway.engines -}}
{{- toYaml .Values.gateway.engines -}}
{{- else -}}
{{- $rankerTarget := include "quasar.rankerTarget" . -}}
{{- $firstPassTarget := .Values.gateway.firstPass.target -}}
{{- if and (eq $firstPassTarget "ray") (not .Values.ray.enabled) -}}
{{- fail "gateway.firstPass.target is ray but ray.enabled is false" -}}
{{- end -}}
{{- if or (ne $rankerTarget "local") (ne $firstPassTarget "local") -}}
{{- $models := printf "%s/models" (include "quasar.worldDir" .) -}}
{{- $localXGBoost := dict "engine" "local_xgboost" "model" "first_pass" -}}
{{- $localOnnx := dict "engine" "local_onnx" "model" "feed_ranker" -}}
{{- $engines := dict "local_xgboost" (dict "kind" "xgboost" "models" (dict "first_pass" (printf "%s/first_pass.ubj" $models))) -}}
{{- $routes := dict -}}
{{- /* first_pass: in process, or the XGBoost scorer of the RayService's Serve application */ -}}
{{- if eq $firstPassTarget "ray" -}}
{{- $address := printf "ray://%s-head-svc:10001" (include "quasar.componentName" (dict "root" . "component" "ray")) -}}
{{- $_ := set $engines "ray" (dict "kind" "ray" "address" $address "app_name" .Values.ray.serve.appName "deployment" .Values.ray.serve.deployment) -}}
{{- $target := dict "engine" "ray" "model" "first_pass" -}}
{{- with .Values.gateway.firstPass.timeoutS }}{{ $_ := set $target "timeout_s" . }}{{ end -}}
{{- $route := dict "targets" (list $target) -}}
{{- if .Values.gateway.firstPass.fallbackToLocal }}{{ $_ := set $route "fallback" (list $localXGBoost) }}{{ end -}}
{{- $_ := set $routes "first_pass" $route -}}
{{- else -}}
{{- $_ := set $routes "first_pass" (dict "targets" (list $localXGBoost)) -}}
{{- end -}}
{{- /* The in-process ONNX models, as in gateway.app.default_engines_config: the two-stage ranker
(`feed_ranker`: local target or fallback) and the whole-model ranker (`feed_ranker_whole`). */ -}}
{{- $onnxModels := dict "feed_ranker" (printf "%s/ranker.onnx" $models) "feed_ranker_whole" (printf "%s/ranker_whole.onnx" $models) -}}
{{- $_ := set $engines "local_onnx" (dict "kind" "onnx" "models" $onnxModels) -}}
{{- $_ := set $routes "feed_ranker_whole" (dict "targets" (list (dict "engine" "local_onnx" "model" "feed_ranker_whole"))) -}}
{{- /* feed_ranker: in-process ONNX Runtime, Triton or TF Serving */ -}}
{{- $ranker := .Values.gateway.ranker -}}
{{- if eq $rankerTarget "local" -}}
{{- $_ := set $routes "feed_ranker" (dict "targets" (list $localOnnx)) -}}
{{- else -}}
{{- $target := dict -}}
{{- if eq $rankerTarget "triton" -}}
{{- $t := .Values.triton -}}
{{- $url := printf "%s:%d" (include "quasar.componentName" (dict "root" . "component" "triton")) (int $t.ports.grpc) -}}
{{- $_ := set $engines "triton" (dict "kind" "triton" "url" $url "models" (dict "feed_ranker" $t.model.name) "startup_timeout_s" $ranker.startupTimeoutS) -}}
{{- $target = dict "engine" "triton" "model" "feed_ranker" -}}
{{- with $t.model.version }}{{ $_ := set $target "version" (toString .) }}{{ end -}}
{{- else -}}
{{- $t := .Values.tfserving -}}
{{- $url := printf "%s:%d" (include "quasar.componentName" (dict "root" . "component" "tfserving")) (int $t.ports.grpc) -}}
{{- $engine := dict "kind" "tfserving" "url" $url "model_name" $t.model.name "startup_timeout_s" $ranker.startupTimeoutS -}}
{{- with $t.model.version }}{{ $_ := set $engine "version" (int .) }}{{ end -}}
{{- $_ := set $engines "tfserving" $engine -}}
{{- $target = dict "engine" "tfserving" "model" $t.model.name -}}
{{- end -}}
{{- with $ranker.timeoutS }}{{ $_ := set $target "timeout_s" . }}{{ end -}}
{{- $route := dict "targets" (list $target) -}}
{{- if $ranker.fallbackToLocal }}{{ $_ := set $route "fallback" (list $localOnnx) }}{{ end -}}
{{- $_ := set $routes "feed_ranker" $route -}}
{{- end -}}
{{- toYaml (dict "engines" $engines "routes" $routes) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The gateway's settings.yaml (gateway.settings.GatewaySettings). */}}
{{- define "quasar.gatewaySettings" -}}
{{- $settings := deepCopy .Values.gateway.settings -}}
{{- $_ := set $settings "host" .Values.gateway.listenHost -}}
{{- $_ := set $settings "port" (int .Values.gateway.ports.grpc) -}}
{{- $_ := set $settings "metrics_port" (int .Values.gateway.ports.metrics) -}}
{{- $_ := set $settings "world_dir" (include "quasar.worldDir" .) -}}
{{- $_ := set $settings "state_dir" .Values.gateway.state.path -}}
{{- if .Values.gateway.workflows -}}
{{- $_ := set $settings "workflows_dir" "/etc/quasar/workflows" -}}
{{- end -}}
{{- $engines := include "quasar.enginesConfig" . -}}
{{- if $engines -}}
{{- $_ := set $settings "engines" (fromYaml $engines) -}}
{{- end -}}
{{- $redisUrl := include "quasar.redisUrl" . -}}
{{- if $redisUrl -}}
{{- $_ := set $settings "store" (dict "kind" "redis" "url" $redisUrl) -}}
{{- end -}}
{{- toYaml $settings -}}
{{- end -}}

{{/* Fails rendering unless the grace period covers preStop plus the drain. */}}
{{- define "quasar.checkGracePeriod" -}}
{{- $needed := addf .Values.gateway.preStopSleepS .Values.gateway.settings.drain_grace_s -}}
{{- if le (float64 .Values.gateway.terminationGracePeriodSeconds) (float64 $needed) -}}
{{- fail (printf "gateway.terminationGracePeriodSeconds (%v) must exceed preStopSleepS + settings.drain_grace_s (%v)" .Values.gateway.terminationGracePeriodSeconds $needed) -}}
{{- end -}}
{{- /* Draining turns grpc.health.v1 NOT_SERVING for "" too: liveness must not give up during a drain. */ -}}
{{- $liveness := .Values.gateway.probes.liveness -}}
{{- $window := mul $liveness.periodSeconds $liveness.failureThreshold -}}
{{- if le (float64 $window) (float64 .Values.gateway.settings.drain_grace_s) -}}
{{- fail (printf "gateway.probes.liveness (periodSeconds x failureThreshold = %v s) must outlast settings.drain_grace_s (%v s)" $window .Values.gateway.settings.drain_grace_s) -}}
{{- end -}}
{{- end -}}

{{/*
A backend's model volume and optional fetch init container. Call with
(dict "root" $ "component" "triton" "values" .Values.triton "defaultCommand" (list ...)).
*/}}
{{- define "quasar.modelVolume" -}}
{{- $repo := .values.modelRepository -}}
- name: models
{{- if eq $repo.volume "persistentVolumeClaim" }}
  persistentVolumeClaim:
    claimName: {{ required (printf "%s.modelRepository.claimName is required for a persistentVolumeClaim repository" .component) $repo.claimName }}
{{- else if eq $repo.volume "hostPath" }}
  hostPath:
    path: {{ required (printf "%s.modelRepository.hostPath is required for a hostPath repository" .component) $repo.hostPath }}
    type: DirectoryOrCreate
{{- else }}
  emptyDir:
    sizeLimit: {{ $repo.sizeLimit }}
{{- end }}
{{- end -}}

{{- define "quasar.modelFetchInit" -}}
{{- $repo := .values.modelRepository -}}
{{- if $repo.fetch.enabled }}
{{- $command := default .defaultCommand $repo.fetch.command -}}
{{- if not $command -}}
{{- fail (printf "%s.modelRepository.fetch.command is required when fetch is enabled" .component) -}}
{{- end }}
- name: fetch-models
  image: {{ default (include "quasar.gatewayImage" .root) $repo.fetch.image }}
  imagePullPolicy: {{ .root.Values.gateway.image.pullPolicy }}
  command:
    {{- toYaml $command | nindent 4 }}
  securityContext:
    {{- include "quasar.containerSecurityContext" (dict "readOnlyRootFilesystem" true) | nindent 4 }}
  resources:
    {{- toYaml .root.Values.gateway.world.build.resources | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: /models
    - name: tmp
      mountPath: /tmp
{{- end }}
{{- end -}}

{{/* Resources with the GPU limit added; call with (dict "resources" R "gpu" (dict "resourceName" N "count" C)). */}}
{{- define "quasar.gpuResources" -}}
{{- $resources := deepCopy .resources -}}
{{- $limits := deepCopy (default (dict) $resources.limits) -}}
{{- $_ := set $limits .gpu.resourceName .gpu.count -}}
{{- $_ := set $resources "limits" $limits -}}
{{- toYaml $resources -}}
{{- end -}}
