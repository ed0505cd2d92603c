{{/*
The openAPIV3Schema of the Selector CRD, shared by its versions v1 and
v1beta1 (manifests/base/crd-selector.yaml has the same, twice).
*/}}
{{- define "eci-profile.selectorSchema" -}}
type: object
description: 'A rule of eci-profile: which pods it selects (by their namespace''s labels and their own), what it adds to them, and where they may run (on virtual nodes, on real nodes, or either). Cluster-scoped; rules are applied by priority, highest first.'
required: [spec]
properties:
  apiVersion:
    type: string
    description: 'The versioned schema of this object: eci.aliyun.com/v1 or eci.aliyun.com/v1beta1 (the same schema).'
  kind:
    type: string
    description: Selector.
  metadata:
    type: object
  spec:
    type: object
    description: 'The rule: namespaceLabels and objectLabels select pods, effect says what is added to them, policy where they run, priority in which order rules apply.'
    properties:
      namespaceLabels:
        type: object
        description: 'A Kubernetes label selector on the labels of the pod''s namespace (matchLabels, matchExpressions). Absent: no condition on the namespace. A Selector with neither namespaceLabels nor objectLabels selects no pod, but its effect is added to every pod sent to a virtual node.'
        properties:
          matchLabels:
            type: object
            description: Labels that must all be present with exactly these values (key to value). Combined with matchExpressions by AND.
            maxProperties: 64
            additionalProperties:
              type: string
              maxLength: 63
              pattern: ^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$
            x-kubernetes-validations:
              - rule: 'self.all(k, size(k) <= 317 && k.matches("^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"))'
                message: 'label keys must be a name of at most 63 characters (alphanumerics, "-", "_", ".", starting and ending with an alphanumeric), optionally prefixed by a DNS subdomain and "/"'
          matchExpressions:
            type: array
            description: Requirements on labels, all of which must hold. Combined with matchLabels by AND.
            maxItems: 64
            items:
              type: object
              description: 'A requirement on one label: its key, an operator and, for In and NotIn, the values.'
              required: [key, operator]
              properties:
                key:
                  type: string
                  description: The label key the requirement applies to.
                  maxLength: 317
                  pattern: ^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$
                operator:
                  type: string
                  description: 'How the label relates to the values: In (the label is set to one of the values), NotIn (the label is absent or set to none of them), Exists (the label is set), DoesNotExist (the label is absent).'
                  enum: [In, NotIn, Exists, DoesNotExist]
                values:
                  type: array
                  description: The label values, non-empty for In and NotIn, empty or absent for Exists and DoesNotExist.
                  maxItems: 64
                  items:
                    type: string
                    maxLength: 63
                    pattern: ^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$
              x-kubernetes-validations:
                - rule: 'self.operator in ["In", "NotIn"] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0'
                  message: values must be non-empty for the operators In and NotIn, and empty for Exists and DoesNotExist
      objectLabels:
        type: object
        description: 'A Kubernetes label selector on the pod''s own labels (matchLabels, matchExpressions). Absent: no condition on the pod''s labels. A Selector with neither namespaceLabels nor objectLabels selects no pod, but its effect is added to every pod sent to a virtual node.'
        properties:
          matchLabels:
            type: object
            description: Labels that must all be present with exactly these values (key to value). Combined with matchExpressions by AND.
            maxProperties: 64
            additionalProperties:
              type: string
              maxLength: 63
              pattern: ^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$
            x-kubernetes-validations:
              - rule: 'self.all(k, size(k) <= 317 && k.matches("^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"))'
                message: 'label keys must be a name of at most 63 characters (alphanumerics, "-", "_", ".", starting and ending with an alphanumeric), optionally prefixed by a DNS subdomain and "/"'
          matchExpressions:
            type: array
            description: Requirements on labels, all of which must hold. Combined with matchLabels by AND.
            maxItems: 64
            items:
              type: object
              description: 'A requirement on one label: its key, an operator and, for In and NotIn, the values.'
              required: [key, operator]
              properties:
                key:
                  type: string
                  description: The label key the requirement applies to.
                  maxLength: 317
                  pattern: ^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$
                operator:
                  type: string
                  description: 'How the label relates to the values: In (the label is set to one of the values), NotIn (the label is absent or set to none of them), Exists (the label is set), DoesNotExist (the label is absent).'
                  enum: [In, NotIn, Exists, DoesNotExist]
                values:
                  type: array
                  description: The label values, non-empty for In and NotIn, empty or absent for Exists and DoesNotExist.
                  maxItems: 64
                  items:
                    type: string
                    maxLength: 63
                    pattern: ^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$
              x-kubernetes-validations:
                - rule: 'self.operator in ["In", "NotIn"] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0'
                  message: values must be non-empty for the operators In and NotIn, and empty for Exists and DoesNotExist
      effect:
        type: object
        description: What is added to the selected pods. Annotations and labels the pod already has are never overwritten.
        properties:
          annotations:
            type: object
            description: 'Annotations added to the selected pods (key to value; values are strings: quote numbers and booleans, as in "true" or "-1000").'
            maxProperties: 64
            additionalProperties:
              type: string
            x-kubernetes-validations:
              - rule: 'self.all(k, size(k) <= 317 && k.matches("^([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"))'
                message: 'annotation keys must be a name of at most 63 characters (alphanumerics, "-", "_", ".", starting and ending with an alphanumeric), optionally prefixed by a DNS subdomain and "/"'
          labels:
            type: object
            description: Labels added to the selected pods (key to value).
            maxProperties: 64
            additionalProperties:
              type: string
              maxLength: 63
              pattern: '^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$'
            x-kubernetes-validations:
              - rule: 'self.all(k, size(k) <= 317 && k.matches("^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"))'
                message: 'label keys must be a name of at most 63 characters (alphanumerics, "-", "_", ".", starting and ending with an alphanumeric), optionally prefixed by a DNS subdomain and "/"'
      policy:
        type: object
        description: 'Where the selected pods run: exactly one of virtualNodeOnly, fair, normalNodePrefer, normalNodeOnly, namespaceResourceLimit. Absent: virtualNodeOnly.'
        minProperties: 1
        maxProperties: 1
        properties:
          virtualNodeOnly:
            type: object
            description: 'On virtual nodes only: the pod gets the virtual node''s nodeSelector and toleration. Written as virtualNodeOnly: {}.'
          fair:
            type: object
            description: 'On real or virtual nodes, as the scheduler decides: the pod gets the virtual node''s toleration only. Written as fair: {}.'
          normalNodePrefer:
            type: object
            description: 'Real nodes first, virtual nodes when they are full: the pod gets the virtual node''s toleration and a preferred node affinity away from virtual nodes. Written as normalNodePrefer: {}.'
            properties:
              cpuRatio:
                type: number
                description: Accepted for compatibility with eci-profile's upstream; ignored.
              memoryRatio:
                type: number
                description: Accepted for compatibility with eci-profile's upstream; ignored.
          normalNodeOnly:
            type: object
            description: 'Never on virtual nodes: the selected pods are left off virtual nodes, and rules of lower priority do not send them there (an exception carved out of a broader rule). Written as normalNodeOnly: {}.'
          namespaceResourceLimit:
            type: object
            description: 'Caps what a namespace may run on virtual nodes. The cap is not enforced yet (a later release): for now the selected pods are sent as with virtualNodeOnly.'
            required: [namespace]
            properties:
              namespace:
                type: string
                description: The namespace whose pods the limits apply to.
                maxLength: 63
                pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'
              limits:
                type: object
                description: 'The most the namespace may run on virtual nodes, by resource name (cpu, memory, ...), as Kubernetes quantities such as 8, 500m or 16Gi.'
                additionalProperties:
                  x-kubernetes-int-or-string: true
                  pattern: '^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$'
        x-kubernetes-validations:
          - rule: '[has(self.virtualNodeOnly), has(self.fair), has(self.normalNodePrefer), has(self.normalNodeOnly), has(self.namespaceResourceLimit)].exists_one(p, p)'
            message: policy must have exactly one of virtualNodeOnly, fair, normalNodePrefer, normalNodeOnly, namespaceResourceLimit
      priority:
        type: integer
        format: int32
        minimum: -2147483648
        maximum: 2147483647
        description: 'The order in which rules apply, higher first; default 0. Between rules of equal priority, the rules of the eci-profile ConfigMap come first, in their order there, then Selectors by name.'
{{- end }}
